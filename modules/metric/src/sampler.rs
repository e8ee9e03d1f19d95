//! Real readings of this host (sysinfo): load averages, memory, CPU usage and per-interface
//! network byte counters, as [`Metric`]s.

use chrono::Utc;
use plantd_worker_sdk::bus::{topic_segment, Metric};
use sysinfo::{Networks, System};

/// Holds the sysinfo state between samples (CPU usage is a difference between two refreshes).
pub struct Sampler {
    source: String,
    system: System,
    networks: Networks,
}

impl Sampler {
    /// A sampler naming its readings after `source`. Takes a first CPU reading so the first
    /// sample's usage is meaningful once the sampling interval has passed.
    pub fn new(source: String) -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Sampler {
            source,
            system,
            networks: Networks::new_with_refreshed_list(),
        }
    }

    /// One reading of every channel, all stamped with the same time.
    pub fn sample(&mut self) -> Vec<Metric> {
        let time = Utc::now();
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.networks.refresh_list();
        let load = System::load_average();
        let mut readings = vec![
            ("load1", load.one, "load"),
            ("load5", load.five, "load"),
            ("load15", load.fifteen, "load"),
            ("memory.used", self.system.used_memory() as f64, "bytes"),
            (
                "memory.available",
                self.system.available_memory() as f64,
                "bytes",
            ),
            ("memory.total", self.system.total_memory() as f64, "bytes"),
            (
                "cpu.usage",
                f64::from(self.system.global_cpu_usage()),
                "percent",
            ),
        ]
        .into_iter()
        .map(|(channel, value, units)| (channel.to_owned(), value, units))
        .collect::<Vec<_>>();
        let mut interfaces: Vec<_> = self.networks.list().iter().collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        for (name, data) in interfaces {
            let name = topic_segment(name);
            readings.push((
                format!("net.{name}.rx_bytes"),
                data.total_received() as f64,
                "bytes",
            ));
            readings.push((
                format!("net.{name}.tx_bytes"),
                data.total_transmitted() as f64,
                "bytes",
            ));
        }
        readings
            .into_iter()
            .map(|(channel, value, units)| Metric {
                time,
                source: self.source.clone(),
                channel,
                value,
                units: units.to_owned(),
                tags: Default::default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_has_real_readings() {
        let mut sampler = Sampler::new("test-host".into());
        let sample = sampler.sample();
        let get = |channel: &str| {
            sample
                .iter()
                .find(|m| m.channel == channel)
                .unwrap_or_else(|| panic!("no {channel} in {sample:?}"))
        };
        let total = get("memory.total").value;
        assert!(total > 0.0, "a machine has memory");
        assert!(get("memory.used").value > 0.0);
        assert!(get("memory.available").value <= total);
        assert!(get("load1").value >= 0.0);
        let cpu = get("cpu.usage").value;
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        assert!(
            sample.iter().any(|m| m.channel.starts_with("net.")),
            "at least the loopback interface"
        );
        assert!(sample.iter().all(|m| m.source == "test-host"));
        assert_eq!(get("load1").topic(), "org.plantd.metric.test-host.load1");
    }
}
