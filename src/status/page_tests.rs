use super::*;
use crate::status::view::{LagRow, PartitionRow};

fn sample_view() -> StatusView {
    StatusView {
        cluster_id: "abc<def>".into(),
        node_id: 2,
        version: "0.1.0".into(),
        generated_at_ms: 1_764_660_000_000,
        refresh_s: 5,
        brokers: vec![
            BrokerRow {
                node_id: 1,
                endpoint: "127.0.0.1:9092".into(),
                alive: true,
                fenced: false,
                controller: true,
                this_node: false,
            },
            BrokerRow {
                node_id: 2,
                endpoint: "127.0.0.1:9094".into(),
                alive: false,
                fenced: true,
                controller: false,
                this_node: true,
            },
        ],
        topics: vec![TopicRow {
            name: "<script>alert(1)</script>".into(),
            internal: false,
            partitions: vec![
                PartitionRow {
                    index: 0,
                    leader: Some(1),
                    leader_epoch: 3,
                    replicas: vec![1, 2],
                    isr: vec![1],
                    log_end_offset: Some(42),
                    size_bytes: Some(2048),
                },
                PartitionRow {
                    index: 1,
                    leader: None,
                    leader_epoch: 0,
                    replicas: vec![2],
                    isr: vec![],
                    log_end_offset: None,
                    size_bytes: None,
                },
            ],
            messages_per_s: Some(12.5),
        }],
        groups: vec![GroupRow {
            group_id: "readers".into(),
            state: "Stable".into(),
            protocol: "range".into(),
            members: vec![MemberRow {
                member_id: "m-1".into(),
                client_id: "client\"x".into(),
                host: "/127.0.0.1".into(),
                assignment: vec![("t".into(), vec![0, 1])],
            }],
            lag: vec![
                LagRow {
                    topic: "t".into(),
                    partition: 0,
                    committed_offset: 40,
                    end_offset: Some(42),
                },
                LagRow {
                    topic: "t".into(),
                    partition: 1,
                    committed_offset: 7,
                    end_offset: None,
                },
            ],
        }],
        errors: vec![ErrorRow {
            time_ms: 0,
            message: "WARN x: <b>bad</b> & worse".into(),
        }],
    }
}

#[test]
fn client_strings_are_escaped_everywhere() {
    let html = render(&sample_view());
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("abc&lt;def&gt;"));
    assert!(html.contains("client&quot;x"));
    assert!(html.contains("&lt;b&gt;bad&lt;/b&gt; &amp; worse"));
    assert!(!html.contains("<b>bad"));
}

#[test]
fn the_page_shows_brokers_partitions_groups_and_errors() {
    let html = render(&sample_view());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(html.contains("Brokers (2)"));
    assert!(html.contains("<span class=\"tag\">controller</span>"));
    assert!(html.contains("<span class=\"bad\">fenced</span>"));
    assert!(html.contains("under-replicated <span class=\"warn\">1</span>"));
    assert!(html.contains("offline <span class=\"bad\">1</span>"));
    assert!(html.contains("12.5 msg/s"));
    assert!(html.contains("2.0 KiB"));
    // Lag 2 on partition 0, unknown on partition 1; total counts what is known.
    assert!(html.contains("lag 2</span>"));
    assert!(html.contains("t: 0, 1"));
    assert!(html.contains("Recent errors (1)"));
    assert!(html.contains("1970-01-01 00:00:00"));
    assert!(html.trim_end().ends_with("</html>"));
    // No external assets and no scripts: the page works offline and cannot run code.
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script"));
}

#[test]
fn empty_cluster_renders_placeholders() {
    let mut view = sample_view();
    view.topics.clear();
    view.groups.clear();
    view.errors.clear();
    let html = render(&view);
    assert!(html.contains("No topics."));
    assert!(html.contains("No groups."));
    assert!(html.contains("None since start-up."));
}

#[test]
fn bytes_and_times_format_like_a_person_reads_them() {
    assert_eq!(format_bytes(0), "0 B");
    assert_eq!(format_bytes(1023), "1023 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    assert_eq!(format_time_ms(0), "1970-01-01 00:00:00");
    // 2026-12-02 06:30:15 UTC
    assert_eq!(format_time_ms(1_796_193_015_000), "2026-12-02 06:30:15");
    assert_eq!(format_time_ms(951_782_400_000), "2000-02-29 00:00:00");
}

#[test]
fn internal_topics_start_folded() {
    let mut view = sample_view();
    view.topics[0].internal = true;
    let html = render(&view);
    let folded = html.find("<details><summary><h3>").expect("folded");
    assert!(html[folded..].contains("</h3></summary><table"));
    assert!(html[folded..].contains("</table></details>"));
}
