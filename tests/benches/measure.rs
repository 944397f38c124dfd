//! Percentiles, goal lines and the `/key/generate` request body, shared by the benchmarks
//! (`tests/benches/engine.rs` and, through `#[path]`, `host/benches/host.rs`). Every goal
//! line prints the figure, the goal and whether this run met it, and the summary at the end
//! repeats them. No line fails the run.

use std::time::Duration;

use serde_json::{Value, json};

/// Latency samples of one operation.
#[derive(Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Creates an empty set with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Adds one sample.
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// Returns the number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns the nearest-rank percentile `p` (0 < p ≤ 100): the smallest sample that at
    /// least `p` percent of the samples do not exceed.
    pub fn percentile(&self, p: f64) -> Duration {
        assert!(!self.0.is_empty(), "no samples to take a percentile of");
        let mut sorted = self.0.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// Returns the median (nearest-rank p50).
    pub fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    /// Returns the nearest-rank p99.
    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }
}

/// Prints the machine's CPU model, logical CPU count, memory, load average and the number
/// of `rustc` processes running (other builds sharing the CPUs). The values come from
/// `/proc`, so where it is missing they print as "unknown" or 0.
pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_else(|_| "unknown".into());
    println!(
        "machine: {cpus} CPUs ({model}), {:.1} GiB RAM, load average {}, {} rustc processes running",
        memory_kib as f64 / (1024.0 * 1024.0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        count_processes("rustc")
    );
}

/// Counts the processes whose command name is `name`.
fn count_processes(name: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .count()
}

/// Prints the creds quantiles with an empty and with a full store, and adds the goal on
/// their p50 ratio. `store` names the store in the goal's line.
pub fn report_outstanding_leases(
    goals: &mut Goals,
    store: &str,
    leases: usize,
    on_empty: &Samples,
    on_full: &Samples,
) {
    println!(
        "0 leases: p50 {}, p99 {}",
        ms(on_empty.p50()),
        ms(on_empty.p99())
    );
    println!(
        "{leases} leases: p50 {}, p99 {}",
        ms(on_full.p50()),
        ms(on_full.p99())
    );
    let ratio = on_full.p50().as_secs_f64() / on_empty.p50().as_secs_f64();
    goals.add(
        &format!("creds p50 with {leases} ÷ with 0 outstanding leases ({store})"),
        format!(
            "{ratio:.2} ({} vs {})",
            ms(on_full.p50()),
            ms(on_empty.p50())
        ),
        "≤ 1.10",
        ratio <= 1.10,
    );
}

/// Formats a duration in milliseconds with three decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

/// Formats a duration in microseconds with one decimal.
pub fn us(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

/// One figure compared with its goal.
pub struct GoalLine {
    /// What was measured.
    pub name: String,
    /// The measured figure, formatted with its unit.
    pub figure: String,
    /// The goal, such as `≤ 1.05`.
    pub goal: String,
    /// Whether the figure meets the goal.
    pub met: bool,
}

/// The goal lines of one run, printed as they are added and again at the end.
#[derive(Default)]
pub struct Goals(Vec<GoalLine>);

impl Goals {
    /// Prints a goal line and keeps it for the summary.
    pub fn add(&mut self, name: &str, figure: String, goal: &str, met: bool) {
        let line = GoalLine {
            name: name.to_owned(),
            figure,
            goal: goal.to_owned(),
            met,
        };
        println!("{}", format_line(&line));
        self.0.push(line);
    }

    /// Prints every goal line of the run as a Markdown table.
    pub fn print_summary(&self, title: &str) {
        println!("\n## {title}\n");
        println!("| figure | value | goal | result |");
        println!("| --- | --- | --- | --- |");
        for line in &self.0 {
            println!(
                "| {} | {} | {} | {} |",
                line.name,
                line.figure,
                line.goal,
                verdict(line.met)
            );
        }
    }
}

fn format_line(line: &GoalLine) -> String {
    format!(
        "  {}: {} (goal {}): {}",
        line.name,
        line.figure,
        line.goal,
        verdict(line.met)
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Returns a `/key/generate` body of the shape that `generate_spec` in `src/creds.rs` sends
/// for a role with `models` and no limits or metadata of its own. It contains the models,
/// the alias, `key_type: llm_api`, the lease TTL plus 60 seconds as `duration`, and the
/// role and lease id in `metadata`.
pub fn generate_body(
    models: &[&str],
    alias: &str,
    role: &str,
    id: &str,
    ttl_seconds: u64,
) -> Value {
    json!({
        "models": models,
        "key_alias": alias,
        "key_type": "llm_api",
        "duration": format!("{}s", ttl_seconds + 60),
        "metadata": {
            "secrets_engine_role": role,
            "secrets_engine_lease_id": format!("litellm/creds/{role}/{id}"),
        },
    })
}

/// Returns 32 lowercase hex digits, the form of an engine lease id: `run` (8 hex digits,
/// unique per run) followed by `counter`, so that the bodies of one run never repeat an
/// alias.
pub fn lease_like_id(run: &str, counter: usize) -> String {
    format!("{run}{counter:024x}")
}
