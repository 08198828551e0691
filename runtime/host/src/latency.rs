//! A histogram of request durations that the request path records into without a lock, and
//! that `/metrics` encodes (see `metrics`).

use std::sync::atomic::Ordering;

/// A histogram of durations kept in atomics: the request path records into it without a lock
/// (`prometheus-client`'s own takes a mutex per observation, which every worker thread would
/// contend on). Buckets: 0.25 ms to about 8 s, doubling, and the rest.
#[derive(Default)]
pub struct Latency {
    buckets: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS + 1],
    sum_nanos: std::sync::atomic::AtomicU64,
}

const LATENCY_BUCKETS: usize = 16;

/// The upper bound of bucket `i`, in seconds.
fn bound(i: usize) -> f64 {
    0.000_25 * f64::from(1u32 << i)
}

impl Latency {
    /// Counts one duration.
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let i = (0..LATENCY_BUCKETS)
            .find(|i| seconds <= bound(*i))
            .unwrap_or(LATENCY_BUCKETS);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut encoder = encoder;
        let buckets: Vec<(f64, u64)> = (0..=LATENCY_BUCKETS)
            .map(|i| {
                let upper = if i == LATENCY_BUCKETS {
                    f64::INFINITY
                } else {
                    bound(i)
                };
                (upper, self.buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_land_in_the_first_bucket_that_holds_them() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(100));
        latency.observe(Duration::from_micros(250));
        latency.observe(Duration::from_secs(1));
        latency.observe(Duration::from_secs(100));
        let counts: Vec<u64> = latency
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2, "0.1 ms and 0.25 ms are within 0.25 ms");
        assert_eq!(counts[12], 1, "1 s is within 1.024 s");
        assert_eq!(counts[LATENCY_BUCKETS], 1, "100 s is past the last bound");
        assert_eq!(counts.iter().sum::<u64>(), 4);
    }
}
