//! The status page: one self-contained HTML document (inline CSS, no scripts, no external
//! assets) rendered from a [`StatusView`]. It reloads itself with a meta refresh, so it works
//! in any browser and in a terminal browser alike.
//!
//! Every string that came from a client or the metadata log (topic names, group and member
//! ids, client ids, hosts, error messages) goes through [`escape`]: a topic named
//! `<script>` must show as text, not run.

use std::fmt::Write;

use super::view::{BrokerRow, ErrorRow, GroupRow, LagRow, MemberRow, StatusView, TopicRow};

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;\
color:#1d2330}\
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:24px;align-items:baseline}\
header h1{font-size:20px;margin:0}header span{color:#b8c0d0}\
main{padding:8px 24px 32px}section{background:#fff;border-radius:6px;margin:16px 0;\
padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}\
h2{font-size:16px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 6px}\
summary h3{display:inline-block;cursor:pointer}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 10px;\
border-bottom:1px solid #e6e8ec;vertical-align:top}th{color:#5a6275;font-weight:600}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#137333}.bad{color:#b3261e;font-weight:600}.warn{color:#a05a00;font-weight:600}\
.muted{color:#8a92a3}.tag{display:inline-block;padding:0 6px;border-radius:3px;\
background:#e8eefc;color:#1a4fb8;font-size:12px;margin-left:4px}\
code{font-family:ui-monospace,monospace;font-size:13px}";

/// Text made safe for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The whole page.
pub fn render(view: &StatusView) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>gracchus node {node}</title><style>{STYLE}</style></head><body>\
         <header><h1>gracchus</h1><span>node {node}</span><span>cluster <code>{cluster}</code>\
         </span><span>version {version}</span><span>updated {time} UTC, every {refresh} s\
         </span></header><main>",
        refresh = view.refresh_s,
        node = view.node_id,
        cluster = escape(&view.cluster_id),
        version = escape(&view.version),
        time = format_time_ms(view.generated_at_ms),
    );
    brokers_section(&mut html, &view.brokers);
    topics_section(&mut html, &view.topics);
    groups_section(&mut html, &view.groups);
    errors_section(&mut html, &view.errors);
    html.push_str("</main></body></html>\n");
    html
}

fn brokers_section(html: &mut String, brokers: &[BrokerRow]) {
    let _ = write!(
        html,
        "<section id=\"brokers\"><h2>Brokers ({})</h2><table><thead><tr><th>Node</th>\
         <th>Endpoint</th><th>State</th><th>Role</th></tr></thead><tbody>",
        brokers.len()
    );
    for broker in brokers {
        let state = if broker.fenced {
            "<span class=\"bad\">fenced</span>"
        } else if broker.alive {
            "<span class=\"ok\">alive</span>"
        } else {
            "<span class=\"bad\">down</span>"
        };
        let mut role = String::new();
        if broker.controller {
            role.push_str("<span class=\"tag\">controller</span>");
        }
        if broker.this_node {
            role.push_str("<span class=\"tag\">this node</span>");
        }
        let _ = write!(
            html,
            "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td>{state}</td><td>{role}</td>\
             </tr>",
            broker.node_id,
            escape(&broker.endpoint),
        );
    }
    html.push_str("</tbody></table></section>");
}

fn topics_section(html: &mut String, topics: &[TopicRow]) {
    let partitions: usize = topics.iter().map(|topic| topic.partitions.len()).sum();
    let under: usize = topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter(|partition| partition.under_replicated())
        .count();
    let offline: usize = topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter(|partition| partition.leader.is_none())
        .count();
    let _ = write!(
        html,
        "<section id=\"topics\"><h2>Topics ({}), partitions {partitions}, \
         under-replicated <span class=\"{}\">{under}</span>, offline \
         <span class=\"{}\">{offline}</span></h2>",
        topics.len(),
        if under > 0 { "warn" } else { "ok" },
        if offline > 0 { "bad" } else { "ok" },
    );
    if topics.is_empty() {
        html.push_str("<p class=\"muted\">No topics.</p>");
    }
    for topic in topics {
        topic_table(html, topic);
    }
    html.push_str("</section>");
}

fn topic_table(html: &mut String, topic: &TopicRow) {
    let rate = match topic.messages_per_s {
        Some(rate) => format!("{rate:.1} msg/s"),
        None => "-".to_string(),
    };
    // Internal topics (50 partitions of __consumer_offsets) start folded: a <details>
    // element needs no script to open.
    if topic.internal {
        html.push_str("<details><summary>");
    }
    let _ = write!(
        html,
        "<h3>{}{}<span class=\"muted\"> &middot; {} partitions &middot; {} here &middot; \
         {rate}</span></h3>{}<table class=\"topic\"><thead><tr><th class=\"n\">Partition</th>\
         <th class=\"n\">Leader</th><th class=\"n\">Epoch</th><th>Replicas</th><th>ISR</th>\
         <th class=\"n\">End offset</th><th class=\"n\">Size</th></tr></thead><tbody>",
        escape(&topic.name),
        if topic.internal {
            "<span class=\"tag\">internal</span>"
        } else {
            ""
        },
        topic.partitions.len(),
        format_bytes(topic.size_bytes()),
        if topic.internal { "</summary>" } else { "" },
    );
    for partition in &topic.partitions {
        let leader = match partition.leader {
            Some(leader) => leader.to_string(),
            None => "<span class=\"bad\">none</span>".to_string(),
        };
        let isr_class = if partition.under_replicated() {
            "warn"
        } else {
            "ok"
        };
        let _ = write!(
            html,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{leader}</td><td class=\"n\">{}</td>\
             <td>{}</td><td class=\"{isr_class}\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            partition.index,
            partition.leader_epoch,
            join_ids(&partition.replicas),
            join_ids(&partition.isr),
            optional(partition.log_end_offset),
            partition
                .size_bytes
                .map(format_bytes)
                .unwrap_or_else(|| "-".to_string()),
        );
    }
    html.push_str("</tbody></table>");
    if topic.internal {
        html.push_str("</details>");
    }
}

fn groups_section(html: &mut String, groups: &[GroupRow]) {
    let _ = write!(
        html,
        "<section id=\"groups\"><h2>Consumer groups coordinated here ({})</h2>",
        groups.len()
    );
    if groups.is_empty() {
        html.push_str("<p class=\"muted\">No groups.</p>");
    }
    for group in groups {
        let total_lag: i64 = group.lag.iter().filter_map(LagRow::lag).sum();
        let _ = write!(
            html,
            "<h3>{}<span class=\"tag\">{}</span><span class=\"muted\"> &middot; {} members \
             &middot; protocol {} &middot; lag {total_lag}</span></h3>",
            escape(&group.group_id),
            escape(&group.state),
            group.members.len(),
            escape(if group.protocol.is_empty() {
                "-"
            } else {
                &group.protocol
            }),
        );
        members_table(html, &group.members);
        lag_table(html, &group.lag);
    }
    html.push_str("</section>");
}

fn members_table(html: &mut String, members: &[MemberRow]) {
    if members.is_empty() {
        return;
    }
    html.push_str(
        "<table class=\"members\"><thead><tr><th>Member</th><th>Client</th><th>Host</th>\
         <th>Assignment</th></tr></thead><tbody>",
    );
    for member in members {
        let assignment: Vec<String> = member
            .assignment
            .iter()
            .map(|(topic, partitions)| format!("{}: {}", escape(topic), join_ids(partitions)))
            .collect();
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&member.member_id),
            escape(&member.client_id),
            escape(&member.host),
            if assignment.is_empty() {
                "-".to_string()
            } else {
                assignment.join("; ")
            },
        );
    }
    html.push_str("</tbody></table>");
}

fn lag_table(html: &mut String, lag: &[LagRow]) {
    if lag.is_empty() {
        return;
    }
    html.push_str(
        "<table class=\"lag\"><thead><tr><th>Topic</th><th class=\"n\">Partition</th>\
         <th class=\"n\">Committed</th><th class=\"n\">End offset</th><th class=\"n\">Lag</th>\
         </tr></thead><tbody>",
    );
    for row in lag {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&row.topic),
            row.partition,
            row.committed_offset,
            optional(row.end_offset),
            optional(row.lag()),
        );
    }
    html.push_str("</tbody></table>");
}

fn errors_section(html: &mut String, errors: &[ErrorRow]) {
    let _ = write!(
        html,
        "<section id=\"errors\"><h2>Recent errors ({})</h2>",
        errors.len()
    );
    if errors.is_empty() {
        html.push_str("<p class=\"muted\">None since start-up.</p></section>");
        return;
    }
    html.push_str("<table><thead><tr><th>Time (UTC)</th><th>Error</th></tr></thead><tbody>");
    for error in errors {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            format_time_ms(error.time_ms),
            escape(&error.message)
        );
    }
    html.push_str("</tbody></table></section>");
}

fn join_ids(ids: &[i32]) -> String {
    let text: Vec<String> = ids.iter().map(i32::to_string).collect();
    if text.is_empty() {
        "-".to_string()
    } else {
        text.join(", ")
    }
}

fn optional(value: Option<i64>) -> String {
    value
        .map(|value| value.to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// Bytes in binary units with one decimal (`1.5 MiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in milliseconds, UTC (civil-from-days, so no
/// date crate is needed for one line of the page).
pub fn format_time_ms(time_ms: i64) -> String {
    let seconds = time_ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
