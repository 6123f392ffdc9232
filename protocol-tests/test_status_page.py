"""The status page at `/` of the HTTP listener (issue 11): what it shows is parsed and
checked against what clients did, and a real browser (headless Chromium from Debian)
renders it; the screenshot is kept as a test artifact in target/test-artifacts/.
"""

import html.parser
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

import clients

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "target", "test-artifacts")
PARTITIONS = 3
FIRST_RECORDS = 30
LATER_RECORDS = 6
HOSTILE_CLIENT_ID = "<b>bold</b>&co"


class Page(html.parser.HTMLParser):
    """The page as sections (by id): their headings' text and their table rows' cell
    texts. Fails on markup the page never writes (a <b> or <script> from a client)."""

    def __init__(self, text):
        super().__init__()
        self.sections = {}
        self.section = None
        self.heading = None
        self.row = None
        self.cell = None
        self.title = ""
        self.in_title = False
        self.refresh = None
        self.tags = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.section = {"headings": [], "rows": []}
            self.sections[attrs.get("id")] = self.section
        elif tag in ("h2", "h3"):
            self.heading = ""
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "title":
            self.in_title = True
        elif tag == "meta" and attrs.get("http-equiv") == "refresh":
            self.refresh = attrs.get("content")

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self.section is not None:
            self.section["headings"].append(self.heading)
            self.heading = None
        elif tag in ("td", "th") and self.row is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr" and self.section is not None:
            self.section["rows"].append(self.row)
            self.row = None
        elif tag == "section":
            self.section = None
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data):
        if self.heading is not None:
            self.heading += data
        if self.cell is not None:
            self.cell += data
        if self.in_title:
            self.title += data


def fetch_page(broker):
    url = f"http://127.0.0.1:{broker.http_port}/"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        return Page(response.read().decode())


def rows_where(section, first_cell):
    return [row for row in section["rows"] if row and row[0] == first_cell]


@pytest.fixture(scope="module")
def scene(broker):
    """A topic with records, a consumer group with a committed position behind the end,
    and a member still in the group while the page is read."""
    topic = f"status-{os.getpid()}-{int(time.time())}"
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    records = [{"value": f"v{i}".encode(), "partition": i % PARTITIONS}
               for i in range(FIRST_RECORDS)]
    clients.produce_ok(broker, topic, records)
    group = f"{topic}-readers"
    consumer = clients.consumer(broker, **{
        "group.id": group, "auto.offset.reset": "earliest", "client.id": HOSTILE_CLIENT_ID,
        "session.timeout.ms": 30000, "enable.auto.offset.store": True})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < FIRST_RECORDS and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen += 1
    assert seen == FIRST_RECORDS, f"consumed {seen} of {FIRST_RECORDS}"
    consumer.commit(asynchronous=False)
    later = [{"value": b"later", "partition": i % PARTITIONS} for i in range(LATER_RECORDS)]
    clients.produce_ok(broker, topic, later)
    yield {"topic": topic, "group": group}
    consumer.close()


def test_the_page_shows_brokers_topics_and_groups_as_they_are(broker, scene):
    page = fetch_page(broker)
    assert page.refresh is not None and int(page.refresh) > 0
    assert "node 1" in page.title
    brokers = page.sections["brokers"]
    (node,) = rows_where(brokers, "1")
    assert node[2] == "alive" and "controller" in node[3] and "this node" in node[3]

    topics = page.sections["topics"]
    heading = next(h for h in topics["headings"] if h.startswith(scene["topic"]))
    assert f"{PARTITIONS} partitions" in heading
    partition_rows = [row for row in topics["rows"] if len(row) == 7 and row[0].isdigit()]
    # Our topic's rows: leader 1, replicas 1, ISR 1, each end offset what was produced
    # to it (records were spread evenly).
    total = FIRST_RECORDS + LATER_RECORDS
    ours = [row for row in partition_rows
            if row[5] == str(total // PARTITIONS) and row[1] == "1" and row[4] == "1"]
    assert len(ours) >= PARTITIONS, partition_rows

    groups = page.sections["groups"]
    group_heading = next(h for h in groups["headings"] if h.startswith(scene["group"]))
    assert "Stable" in group_heading and "1 members" in group_heading
    assert f"lag {LATER_RECORDS}" in group_heading
    member = next(row for row in groups["rows"] if len(row) == 4 and row[1] == HOSTILE_CLIENT_ID)
    assert member[3].startswith(scene["topic"] + ": ")
    lag_rows = [row for row in groups["rows"]
                if len(row) == 5 and row[0] == scene["topic"]]
    assert sorted(int(row[1]) for row in lag_rows) == list(range(PARTITIONS))
    assert sum(int(row[4]) for row in lag_rows) == LATER_RECORDS
    # The client id came back as text: the parser saw no element the page never writes.
    assert "b" not in page.tags and "script" not in page.tags


def test_message_rate_appears_after_two_samples(broker, scene):
    fetch_page(broker)
    clients.produce_ok(broker, scene["topic"], [{"value": b"r", "partition": 0}] * 50)
    time.sleep(1.2)
    page = fetch_page(broker)
    heading = next(h for h in page.sections["topics"]["headings"]
                   if h.startswith(scene["topic"]))
    rate = float(heading.rsplit("\u00b7", 1)[1].split("msg/s")[0])
    assert rate > 0, heading


def test_an_unparsable_frame_shows_among_recent_errors(broker):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as connection:
        # A frame that announces 5 bytes and carries an api key the broker cannot parse
        # as a request header: the connection is closed and the error logged.
        connection.sendall(b"\x00\x00\x00\x05\xff\xff\x00\x00\x00")
        connection.settimeout(5)
        try:
            while connection.recv(1024):
                pass
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while True:
        errors = page_errors(broker)
        if any("127.0.0.1" in row[1] for row in errors):
            break
        assert time.monotonic() < deadline, errors
        time.sleep(0.2)


def page_errors(broker):
    return [row for row in fetch_page(broker).sections["errors"]["rows"]
            if len(row) == 2 and row[0][:2] == "20"]


def test_a_real_browser_renders_the_page(broker, scene):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: scripts/test installs it (apt)"
    os.makedirs(ARTIFACTS, exist_ok=True)
    screenshot = os.path.join(ARTIFACTS, "status-page.png")
    if os.path.exists(screenshot):
        os.remove(screenshot)
    url = f"http://127.0.0.1:{broker.http_port}/"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--no-first-run", "--disable-dev-shm-usage",
              f"--user-data-dir={os.path.join(broker.data_dir, 'chromium-profile')}"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Page(dom.stdout)
    assert {"brokers", "topics", "groups", "errors"} <= set(parsed.sections)
    assert any(h.startswith(scene["group"]) for h in parsed.sections["groups"]["headings"])
    shot = subprocess.run(common + ["--window-size=1280,1400", f"--screenshot={screenshot}",
                                    url], capture_output=True, text=True, timeout=90)
    assert shot.returncode == 0, shot.stderr[-2000:]
    with open(screenshot, "rb") as image:
        data = image.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1400), (width, height)
    # A blank page compresses to a few KiB; one with tables and text does not.
    assert len(data) > 20_000, len(data)
