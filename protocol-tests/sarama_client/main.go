// A command-line driver for the Sarama Go client (Debian's golang-github-shopify-sarama-dev,
// Sarama 1.22.1), so protocol tests can run an unmodified Sarama against the broker. Each
// subcommand prints JSON lines on stdout and exits 1 after printing {"error": ...} when the
// client reports a failure. Sarama 1.22 speaks the versions of its `Version` setting
// (V2_1_0_0 here): Produce v3, Fetch v4, Metadata v5, ListOffsets v1, OffsetCommit v2,
// OffsetFetch v1, FindCoordinator v0, JoinGroup v1, CreateTopics v2, DeleteTopics v1.
// Kafka 4.x still serves them all; the newer clients in the other tests do not use them.
// Its DescribeConfigs (v0: ClusterAdmin's ListTopics and DescribeConfig) is the exception:
// Kafka 4.0 removed that version (KIP-896) and closes the connection, as the broker does.
//
// Built by protocol-tests/sarama.py (GOPATH mode, no module download).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Shopify/sarama"
)

func emit(v interface{}) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}

// fail prints the error, with its Kafka code when the broker gave one, and exits 1. The
// line's kind is "failed" for a running group member's collected events.
func fail(what string, err error) {
	out := map[string]interface{}{"kind": "failed", "error": err.Error(), "during": what}
	if te, ok := err.(*sarama.TopicError); ok {
		err = te.Err
	}
	if ke, ok := err.(sarama.KError); ok {
		out["code"] = int16(ke)
	}
	emit(out)
	os.Exit(1)
}

func config(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = clientID
	c.Metadata.Retry.Max = 10
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	c.Consumer.Return.Errors = true
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 3
	// OffsetCommit v2 carries a retention time; v1 (used when it is 0) has per-partition
	// timestamps instead.
	c.Consumer.Offsets.Retention = time.Hour
	return c
}

func newClient(brokers string, c *sarama.Config) sarama.Client {
	client, err := sarama.NewClient(strings.Split(brokers, ","), c)
	if err != nil {
		fail("connect", err)
	}
	return client
}

var codecs = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
	"zstd":   sarama.CompressionZSTD,
}

// produce sends -count records (key k<i>, value <prefix><i>, header n=<i>) one at a time
// through a SyncProducer (or all at once with -async) and prints where each landed.
func produce(args []string) {
	fs := flag.NewFlagSet("produce", flag.ExitOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	topic := fs.String("topic", "", "topic")
	count := fs.Int("count", 10, "records")
	prefix := fs.String("prefix", "v", "value prefix")
	codec := fs.String("codec", "none", "none, gzip, snappy, lz4 or zstd")
	acks := fs.Int("acks", -1, "-1, 0 or 1")
	partition := fs.Int("partition", -1, "fixed partition; -1: hash of the key")
	idempotent := fs.Bool("idempotent", false, "idempotent producer")
	async := fs.Bool("async", false, "send every record at once through an AsyncProducer")
	retries := fs.Int("retries", 3, "Producer.Retry.Max (100 ms apart)")
	pace := fs.Duration("pace", 0, "SyncProducer: pause between records")
	fs.Parse(args)

	c := config("sarama-producer")
	c.Producer.RequiredAcks = sarama.RequiredAcks(*acks)
	c.Producer.Compression = codecs[*codec]
	c.Producer.Retry.Max = *retries
	if *partition >= 0 {
		c.Producer.Partitioner = sarama.NewManualPartitioner
	}
	if *idempotent {
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
	}
	record := func(i int) *sarama.ProducerMessage {
		return &sarama.ProducerMessage{
			Topic:     *topic,
			Key:       sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("%s%d", *prefix, i)),
			Headers:   []sarama.RecordHeader{{Key: []byte("n"), Value: []byte(fmt.Sprint(i))}},
			Partition: int32(*partition),
			Metadata:  i,
		}
	}
	if *async {
		produceAsync(c, strings.Split(*brokers, ","), *count, record)
		return
	}
	producer, err := sarama.NewSyncProducer(strings.Split(*brokers, ","), c)
	if err != nil {
		fail("connect", err)
	}
	for i := 0; i < *count; i++ {
		p, o, err := producer.SendMessage(record(i))
		if err != nil {
			fail(fmt.Sprintf("send %d", i), err)
		}
		emit(map[string]interface{}{"i": i, "partition": p, "offset": o})
		time.Sleep(*pace)
	}
	if err := producer.Close(); err != nil {
		fail("close", err)
	}
}

// produceAsync hands every record to an AsyncProducer while another goroutine collects
// the answers: Sarama batches what has queued up per partition and keeps up to
// Net.MaxOpenRequests (5) produce requests in flight on a connection.
func produceAsync(c *sarama.Config, brokers []string, count int,
	record func(int) *sarama.ProducerMessage) {
	producer, err := sarama.NewAsyncProducer(brokers, c)
	if err != nil {
		fail("connect", err)
	}
	go func() {
		for i := 0; i < count; i++ {
			producer.Input() <- record(i)
		}
	}()
	for answered := 0; answered < count; answered++ {
		select {
		case m := <-producer.Successes():
			emit(map[string]interface{}{
				"i": m.Metadata, "partition": m.Partition, "offset": m.Offset,
			})
		case e := <-producer.Errors():
			fail(fmt.Sprintf("send %v", e.Msg.Metadata), e.Err)
		}
	}
	if err := producer.Close(); err != nil {
		fail("close", err)
	}
}

func message(m *sarama.ConsumerMessage) map[string]interface{} {
	headers := map[string]string{}
	for _, h := range m.Headers {
		headers[string(h.Key)] = string(h.Value)
	}
	return map[string]interface{}{
		"topic": m.Topic, "partition": m.Partition, "offset": m.Offset,
		"key": string(m.Key), "value": string(m.Value), "headers": headers,
		"timestamp_ms": m.Timestamp.UnixNano() / int64(time.Millisecond),
	}
}

// consume reads -count records of one partition from -offset with a partition consumer
// (no group) and prints them; with -read-committed it skips aborted transactions as
// Fetch v4's aborted-transactions list tells it.
func consume(args []string) {
	fs := flag.NewFlagSet("consume", flag.ExitOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	topic := fs.String("topic", "", "topic")
	partition := fs.Int("partition", 0, "partition")
	offset := fs.Int64("offset", sarama.OffsetOldest, "first offset; -2 oldest, -1 newest")
	count := fs.Int("count", 10, "records to read")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	committed := fs.Bool("read-committed", false, "isolation level read_committed")
	fs.Parse(args)

	c := config("sarama-consumer")
	if *committed {
		c.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	client := newClient(*brokers, c)
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		fail("consumer", err)
	}
	pc, err := consumer.ConsumePartition(*topic, int32(*partition), *offset)
	if err != nil {
		fail("consume partition", err)
	}
	deadline := time.After(*timeout)
	for read := 0; read < *count; {
		select {
		case m := <-pc.Messages():
			emit(message(m))
			read++
		case e := <-pc.Errors():
			fail("fetch", e.Err)
		case <-deadline:
			fail("fetch", fmt.Errorf("timed out after %d of %d records", read, *count))
		}
	}
	emit(map[string]interface{}{"high_water_mark": pc.HighWaterMarkOffset()})
	pc.Close()
	consumer.Close()
	client.Close()
}

// offsets prints the oldest and newest offsets of a partition (ListOffsets).
func offsets(args []string) {
	fs := flag.NewFlagSet("offsets", flag.ExitOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	topic := fs.String("topic", "", "topic")
	partition := fs.Int("partition", 0, "partition")
	fs.Parse(args)

	client := newClient(*brokers, config("sarama-offsets"))
	oldest, err := client.GetOffset(*topic, int32(*partition), sarama.OffsetOldest)
	if err != nil {
		fail("oldest", err)
	}
	newest, err := client.GetOffset(*topic, int32(*partition), sarama.OffsetNewest)
	if err != nil {
		fail("newest", err)
	}
	emit(map[string]interface{}{"oldest": oldest, "newest": newest})
	client.Close()
}

// commit stores -offset for a partition as -group's position through Sarama's offset
// manager (a standalone consumer: no member id, generation -1), then reads it back with a
// fresh manager.
func commit(args []string) {
	fs := flag.NewFlagSet("commit", flag.ExitOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	group := fs.String("group", "", "group id")
	topic := fs.String("topic", "", "topic")
	partition := fs.Int("partition", 0, "partition")
	offset := fs.Int64("offset", 0, "offset to commit")
	fs.Parse(args)

	client := newClient(*brokers, config("sarama-commit"))
	manage := func() (sarama.OffsetManager, sarama.PartitionOffsetManager) {
		om, err := sarama.NewOffsetManagerFromClient(*group, client)
		if err != nil {
			fail("offset manager", err)
		}
		pom, err := om.ManagePartition(*topic, int32(*partition))
		if err != nil {
			fail("manage partition", err)
		}
		return om, pom
	}
	// Closing flushes a marked offset (OffsetCommit) and reports its errors.
	closeBoth := func(om sarama.OffsetManager, pom sarama.PartitionOffsetManager) {
		if err := pom.Close(); err != nil {
			fail("commit", err)
		}
		if err := om.Close(); err != nil {
			fail("commit", err)
		}
	}
	read := func() (int64, string) {
		om, pom := manage()
		next, meta := pom.NextOffset()
		closeBoth(om, pom)
		return next, meta
	}
	before, _ := read()
	om, pom := manage()
	pom.MarkOffset(*offset, "from sarama")
	closeBoth(om, pom)
	after, meta := read()
	emit(map[string]interface{}{"before": before, "after": after, "metadata": meta})
	client.Close()
}

// groupHandler records a member's claims and reads them, marking each record consumed.
type groupHandler struct {
	mu    sync.Mutex
	read  int
	limit int
	done  chan struct{}
}

func (h *groupHandler) Setup(s sarama.ConsumerGroupSession) error {
	claims := s.Claims()
	for _, parts := range claims {
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	}
	emit(map[string]interface{}{
		"kind": "assigned", "member_id": s.MemberID(), "generation": s.GenerationID(),
		"claims": claims,
	})
	return nil
}

func (h *groupHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	emit(map[string]interface{}{"kind": "revoked", "generation": s.GenerationID()})
	return nil
}

func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		out := message(m)
		out["kind"] = "record"
		out["generation"] = s.GenerationID()
		emit(out)
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.read++
		if h.read == h.limit {
			close(h.done)
		}
		h.mu.Unlock()
	}
	return nil
}

// group joins -group as one member subscribed to -topics and reads until it has read
// -count records (0: until SIGTERM or -timeout), then leaves: JoinGroup, SyncGroup with
// Sarama's own assignment (range by default), Heartbeat, OffsetFetch/OffsetCommit,
// LeaveGroup.
func group(args []string) {
	fs := flag.NewFlagSet("group", flag.ExitOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	groupID := fs.String("group", "", "group id")
	topics := fs.String("topics", "", "comma-separated topics")
	count := fs.Int("count", 0, "stop after this many records; 0: run until SIGTERM")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	strategy := fs.String("strategy", "range", "range or roundrobin")
	fs.Parse(args)

	c := config("sarama-group")
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	c.Consumer.Group.Session.Timeout = 6 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	if *strategy == "roundrobin" {
		c.Consumer.Group.Rebalance.Strategy = sarama.BalanceStrategyRoundRobin
	}
	cg, err := sarama.NewConsumerGroup(strings.Split(*brokers, ","), *groupID, c)
	if err != nil {
		fail("consumer group", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	handler := &groupHandler{limit: *count, done: make(chan struct{})}
	go func() {
		for err := range cg.Errors() {
			emit(map[string]interface{}{"kind": "error", "error": err.Error()})
		}
	}()
	finished := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, strings.Split(*topics, ","), handler); err != nil {
				finished <- err
				return
			}
		}
		finished <- nil
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	timedOut := false
	select {
	case <-handler.done:
	case <-signals:
	case <-time.After(*timeout):
		timedOut = true
	case err := <-finished:
		fail("consume", err)
	}
	cancel()
	if err := <-finished; err != nil {
		fail("consume", err)
	}
	// Close commits what was marked and leaves the group.
	if err := cg.Close(); err != nil {
		fail("close", err)
	}
	if timedOut {
		fail("consume", fmt.Errorf("timed out after %d records", handler.read))
	}
	emit(map[string]interface{}{"kind": "closed", "read": handler.read})
}

// admin runs one ClusterAdmin operation: create, describe-topic, describe-config,
// alter-config, create-partitions, delete-records, delete, groups (of -group, with its
// offsets for -topic's -partitions).
func admin(args []string) {
	fs := flag.NewFlagSet("admin", flag.ExitOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	op := fs.String("op", "", "operation")
	topic := fs.String("topic", "", "topic")
	partitions := fs.Int("partitions", 1, "partition count (create, create-partitions, groups)")
	configs := fs.String("config", "", "k=v,k=v (create, alter-config)")
	offset := fs.Int64("offset", 0, "delete-records: delete below this offset in partition 0")
	groupID := fs.String("group", "", "groups: the group to describe")
	fs.Parse(args)

	ca, err := sarama.NewClusterAdmin(strings.Split(*brokers, ","), config("sarama-admin"))
	if err != nil {
		fail("connect", err)
	}
	entries := map[string]*string{}
	for _, kv := range strings.Split(*configs, ",") {
		if parts := strings.SplitN(kv, "=", 2); len(parts) == 2 {
			value := parts[1]
			entries[parts[0]] = &value
		}
	}
	switch *op {
	case "create":
		detail := &sarama.TopicDetail{
			NumPartitions: int32(*partitions), ReplicationFactor: 1, ConfigEntries: entries,
		}
		if err = ca.CreateTopic(*topic, detail, false); err == nil {
			emit(map[string]interface{}{"created": *topic})
		}
	case "describe-topic":
		// Metadata v5. ListTopics would also send DescribeConfigs v0, which Kafka 4.0
		// removed (KIP-896): the broker closes the connection, see describe-config.
		var found []*sarama.TopicMetadata
		if found, err = ca.DescribeTopics([]string{*topic}); err == nil {
			for _, t := range found {
				if t.Err != sarama.ErrNoError {
					err = t.Err
					break
				}
				replicas := 0
				if len(t.Partitions) > 0 {
					replicas = len(t.Partitions[0].Replicas)
				}
				emit(map[string]interface{}{
					"topic": t.Name, "partitions": len(t.Partitions),
					"replication_factor": replicas, "internal": t.IsInternal,
				})
			}
		}
	case "describe-config":
		// DescribeConfigs v0: refused by Kafka 4.x, kept to show that it is refused.
		var found []sarama.ConfigEntry
		resource := sarama.ConfigResource{Type: sarama.TopicResource, Name: *topic}
		if found, err = ca.DescribeConfig(resource); err == nil {
			out := map[string]interface{}{}
			for _, e := range found {
				out[e.Name] = map[string]interface{}{"value": e.Value, "default": e.Default}
			}
			emit(map[string]interface{}{"configs": out})
		}
	case "alter-config":
		if err = ca.AlterConfig(sarama.TopicResource, *topic, entries, false); err == nil {
			emit(map[string]interface{}{"altered": *topic})
		}
	case "create-partitions":
		if err = ca.CreatePartitions(*topic, int32(*partitions), nil, false); err == nil {
			emit(map[string]interface{}{"partitions": *partitions})
		}
	case "delete-records":
		if err = ca.DeleteRecords(*topic, map[int32]int64{0: *offset}); err == nil {
			emit(map[string]interface{}{"deleted_below": *offset})
		}
	case "delete":
		if err = ca.DeleteTopic(*topic); err == nil {
			emit(map[string]interface{}{"deleted": *topic})
		}
	case "groups":
		var listed map[string]string
		if listed, err = ca.ListConsumerGroups(); err != nil {
			break
		}
		var described []*sarama.GroupDescription
		if described, err = ca.DescribeConsumerGroups([]string{*groupID}); err != nil {
			break
		}
		var fetched *sarama.OffsetFetchResponse
		// OffsetFetch v1 cannot ask for every topic (null topics came in v2): name them.
		all := []int32{}
		for p := 0; p < *partitions; p++ {
			all = append(all, int32(p))
		}
		fetched, err = ca.ListConsumerGroupOffsets(*groupID, map[string][]int32{*topic: all})
		if err != nil {
			break
		}
		committed := map[string]map[int32]int64{}
		for t, parts := range fetched.Blocks {
			committed[t] = map[int32]int64{}
			for p, block := range parts {
				committed[t][p] = block.Offset
			}
		}
		members := []map[string]interface{}{}
		for _, d := range described {
			for id, m := range d.Members {
				assignment, aerr := m.GetMemberAssignment()
				if aerr != nil {
					fail("member assignment", aerr)
				}
				members = append(members, map[string]interface{}{
					"member_id": id, "client_id": m.ClientId, "assignment": assignment.Topics,
				})
			}
			emit(map[string]interface{}{
				"listed": listed, "state": d.State, "protocol_type": d.ProtocolType,
				"protocol": d.Protocol, "members": members, "committed": committed,
			})
		}
	default:
		err = fmt.Errorf("unknown op %q", *op)
	}
	if err != nil {
		fail(*op, err)
	}
	ca.Close()
}

func main() {
	commands := map[string]func([]string){
		"produce": produce, "consume": consume, "offsets": offsets, "commit": commit,
		"group": group, "admin": admin,
	}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: sarama_client produce|consume|offsets|commit|group|admin [flags]")
		os.Exit(2)
	}
	commands[os.Args[1]](os.Args[2:])
}
