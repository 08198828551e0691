//! Linearizable reads share their rounds of confirming leadership.
//!
//! A read is linearizable once this host has applied up to an index that was confirmed, by a
//! majority, *after the read arrived*. Every read running its own confirmation costs a round
//! trip each (to a majority, or to the leader from a follower): 300 requests for unknown service
//! names made 300. Here reads join rounds instead: a read takes the first round that starts
//! after it arrived, so at most one round runs at a time and one round answers every read that
//! waited for it, however many there are. A round that started before a read arrived never
//! answers it.

use std::sync::Mutex;

use doppel_store::StoreError;
use tokio::sync::watch;

/// The rounds of one store.
pub(crate) struct ReadRounds {
    state: Mutex<State>,
    /// The last round finished and how it went (`None`: it was abandoned).
    done: watch::Sender<(u64, Option<Result<(), String>>)>,
}

#[derive(Default)]
struct State {
    /// Rounds started so far (the last one's number).
    started: u64,
    /// Whether one runs now.
    running: bool,
}

/// Marks the running round as ended when dropped: a round whose caller went away (a request
/// cancelled mid-read) must not block the others.
struct Running<'a>(&'a ReadRounds);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running = false;
        // Wakes the waiters, one of which starts the next round.
        self.0.done.send_modify(|_| {});
    }
}

impl ReadRounds {
    pub(crate) fn new() -> ReadRounds {
        ReadRounds {
            state: Mutex::new(State::default()),
            done: watch::channel((0, None)).0,
        }
    }

    /// Waits for a round that started after now to finish, running it if none runs; `round`
    /// is one confirmation. Its error is every waiting read's.
    pub(crate) async fn join<F, Fut>(&self, round: F) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        let mut finished = self.done.subscribe();
        let wanted = self.state.lock().unwrap_or_else(|e| e.into_inner()).started + 1;
        loop {
            {
                let (number, outcome) = &*finished.borrow_and_update();
                if *number >= wanted
                    && let Some(outcome) = outcome
                {
                    return outcome.clone().map_err(StoreError::Unavailable);
                }
            }
            let mine = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                (!state.running).then(|| {
                    state.running = true;
                    state.started += 1;
                    state.started
                })
            };
            if let Some(number) = mine {
                let running = Running(self);
                let outcome = round().await.map_err(|e| match e {
                    StoreError::Unavailable(why) => why,
                    other => other.to_string(),
                });
                self.state.lock().unwrap_or_else(|e| e.into_inner()).running = false;
                std::mem::forget(running);
                self.done.send_replace((number, Some(outcome.clone())));
                return outcome.map_err(StoreError::Unavailable);
            }
            if finished.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn many_reads_share_few_rounds_and_none_takes_a_round_started_before_it() {
        let rounds = Arc::new(ReadRounds::new());
        let ran = Arc::new(AtomicU64::new(0));
        let reads: Vec<_> = (0..300)
            .map(|_| {
                let (rounds, ran) = (rounds.clone(), ran.clone());
                tokio::spawn(async move {
                    rounds
                        .join(|| async {
                            ran.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for read in reads {
            read.await.unwrap().unwrap();
        }
        let ran = ran.load(Ordering::SeqCst);
        assert!((1..=3).contains(&ran), "{ran} rounds for 300 reads");

        // A read arriving while a round runs waits for the next one.
        let first = {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                rounds
                    .join(|| async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(StoreError::Unavailable("the first round".into()))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = rounds.join(|| async { Ok(()) }).await;
        assert!(
            second.is_ok(),
            "took the round that started before it: {second:?}"
        );
        assert!(first.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_cancelled_round_does_not_block_the_others() {
        let rounds = Arc::new(ReadRounds::new());
        let stuck = {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                rounds
                    .join(std::future::pending::<Result<(), StoreError>>)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiting = {
            let rounds = rounds.clone();
            tokio::spawn(async move { rounds.join(|| async { Ok(()) }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        stuck.abort();
        let answered = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(answered, Ok(Ok(Ok(())))), "{answered:?}");
    }
}
