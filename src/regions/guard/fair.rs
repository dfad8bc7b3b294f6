//! Fair queuing at a region's limiter (README, "Fair sharing"): when the region's rate or its
//! concurrency is contended, what frees up goes to the flows (projects) in turn, not to
//! whoever came first.
//!
//! The discipline is start-time fair queuing with every call costing one: a flow's next call
//! starts at the flow's last served tag plus one (or, when the flow was idle, at the tag last
//! served), and the flow whose next call has the smallest tag is served (ties in arrival
//! order). Tags are charged when a call is served, not when it joins, so a call that gave up
//! costs its flow nothing. A flow that floods holds tags
//! far ahead; a flow that arrives with nothing queued is tagged with the tag being served, so
//! it goes before the flood's next call and waits at most for the next token or slot. A flow
//! that empties forgets its tags (no credit saved while idle), so the table holds only flows
//! that have waiters: it is bounded by the waiters, and each flow's queue by
//! `max_queued_per_project`. Kubernetes' API Priority and Fairness shuffle-shards flows onto
//! a fixed set of queues because it has far more flows than it will track; here the waiters
//! already bound the flows, so every flow has its own queue and no two flows share one.
//!
//! Nothing here knows what the capacity is: the caller takes a token and a slot, then asks
//! [`FairQueue::hand_over`] whom to give them to (`admission.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// A waiter is handed a concurrency slot when its turn comes (its rate token is spent for it).
pub(crate) type Grant = OwnedSemaphorePermit;

#[derive(Debug, Default)]
struct Flow {
    /// (arrival number, where its grant goes), in arrival order.
    waiting: VecDeque<(u64, oneshot::Sender<Grant>)>,
    /// The start tag of its next call served. Only a call served is charged: a waiter that
    /// gave up (its deadline, its client gone) leaves without moving it, so a flow whose
    /// calls time out is not pushed back for service it never had.
    tag: u64,
}

#[derive(Debug, Default)]
struct Flows {
    flows: HashMap<Box<str>, Flow>,
    /// The tag last served: a newly active flow starts here.
    serving: u64,
    arrivals: u64,
    /// A dispatcher is running (it stops when nobody waits).
    dispatching: bool,
}

/// What joining a flow's queue came to.
#[derive(Debug)]
pub(crate) enum Joined {
    /// Wait on this for the grant; `dispatch`: no dispatcher runs, the caller starts one.
    Waiting {
        grant: oneshot::Receiver<Grant>,
        dispatch: bool,
    },
    /// The flow already has its bound of waiters.
    Full,
}

#[derive(Debug)]
pub(crate) struct FairQueue {
    flows: Mutex<Flows>,
    per_flow: usize,
}

impl FairQueue {
    pub(crate) fn new(per_flow: usize) -> FairQueue {
        FairQueue {
            flows: Mutex::default(),
            per_flow: per_flow.max(1),
        }
    }

    fn flows(&self) -> std::sync::MutexGuard<'_, Flows> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nobody waits: a call may take free capacity at once.
    pub(crate) fn is_idle(&self) -> bool {
        self.flows().flows.is_empty()
    }

    /// How many flows have calls waiting now.
    pub(crate) fn flows_waiting(&self) -> usize {
        self.flows().flows.len()
    }

    /// Queue a call of `flow`.
    pub(crate) fn join(&self, flow: &str) -> Joined {
        let mut s = self.flows();
        let serving = s.serving;
        let arrival = s.arrivals;
        let per_flow = self.per_flow;
        let entry = match s.flows.get_mut(flow) {
            Some(f) => f,
            None => s.flows.entry(flow.into()).or_insert_with(|| Flow {
                waiting: VecDeque::new(),
                tag: serving,
            }),
        };
        // Those that gave up leave first: they do not count against the bound.
        while entry.waiting.front().is_some_and(|(_, w)| w.is_closed()) {
            entry.waiting.pop_front();
        }
        if entry.waiting.len() >= per_flow {
            // Nor do those that gave up further back (a burst of clients gone at once): the
            // whole queue is looked through only when it seems full.
            entry.waiting.retain(|(_, w)| !w.is_closed());
        }
        if entry.waiting.is_empty() {
            // Active again: no credit saved while idle.
            entry.tag = entry.tag.max(serving);
        }
        if entry.waiting.len() >= per_flow {
            return Joined::Full;
        }
        let (tx, rx) = oneshot::channel();
        entry.waiting.push_back((arrival, tx));
        s.arrivals += 1;
        let dispatch = !s.dispatching;
        s.dispatching = true;
        Joined::Waiting {
            grant: rx,
            dispatch,
        }
    }

    /// Give `grant` to the waiter whose turn it is (skipping, uncharged, those that gave up);
    /// back when nobody waits, and the dispatcher then stops (`dispatching` cleared in the
    /// same lock as [`FairQueue::join`] reads it, so a call joining now starts a new one).
    pub(crate) fn hand_over(&self, mut grant: Grant) -> Option<Grant> {
        let mut s = self.flows();
        loop {
            let next = s
                .flows
                .iter()
                .filter_map(|(name, f)| f.waiting.front().map(|(arrival, _)| (f.tag, *arrival, name)))
                .min()
                .map(|(tag, _, name)| (tag, name.clone()));
            let Some((tag, name)) = next else {
                s.dispatching = false;
                return Some(grant);
            };
            let flow = s.flows.get_mut(&name).expect("just found");
            let (_, waiter) = flow.waiting.pop_front().expect("non-empty");
            // The grant goes to a waiting task (a send, not a wait): fine under the lock.
            let sent = waiter.send(grant);
            if sent.is_ok() {
                flow.tag = tag + 1;
            }
            if flow.waiting.is_empty() {
                s.flows.remove(&name);
            }
            match sent {
                Ok(()) => {
                    s.serving = s.serving.max(tag);
                    return None;
                }
                Err(back) => grant = back,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn waiting(joined: Joined) -> oneshot::Receiver<Grant> {
        match joined {
            Joined::Waiting { grant, .. } => grant,
            Joined::Full => panic!("full"),
        }
    }

    /// Who gets each of `n` grants handed out one at a time.
    fn serve(queue: &FairQueue, slots: &Arc<Semaphore>, waiters: &mut [(String, oneshot::Receiver<Grant>)], n: usize) -> Vec<String> {
        let mut order = Vec::new();
        for _ in 0..n {
            let grant = slots.clone().try_acquire_owned().expect("a free slot");
            assert!(queue.hand_over(grant).is_none(), "somebody waits");
            let served = waiters
                .iter_mut()
                .position(|(_, rx)| rx.try_recv().is_ok())
                .expect("one was served");
            order.push(waiters[served].0.clone());
        }
        order
    }

    #[test]
    fn a_quiet_flow_goes_before_the_floods_next_call() {
        let queue = FairQueue::new(100);
        let slots = Arc::new(Semaphore::new(1000));
        let mut waiters: Vec<(String, oneshot::Receiver<Grant>)> = (0..50)
            .map(|_| ("noisy".to_string(), waiting(queue.join("/v3/noisy"))))
            .collect();
        assert_eq!(serve(&queue, &slots, &mut waiters, 3), ["noisy"; 3]);
        waiters.push(("quiet".into(), waiting(queue.join("/v3/quiet"))));
        assert_eq!(serve(&queue, &slots, &mut waiters, 1), ["quiet"], "one grant at most");
        // Two quiet calls: the first starts at the tag being served again (the flow had
        // emptied), then they alternate with the flood.
        waiters.push(("quiet".into(), waiting(queue.join("/v3/quiet"))));
        waiters.push(("quiet".into(), waiting(queue.join("/v3/quiet"))));
        let order = serve(&queue, &slots, &mut waiters, 4);
        assert_eq!(order, ["quiet", "noisy", "quiet", "noisy"]);
    }

    #[test]
    fn equal_floods_get_equal_shares_and_one_alone_gets_all() {
        let queue = FairQueue::new(1000);
        let slots = Arc::new(Semaphore::new(10_000));
        let mut waiters = Vec::new();
        for flow in ["a", "b", "c"] {
            for _ in 0..200 {
                waiters.push((flow.to_string(), waiting(queue.join(flow))));
            }
        }
        let order = serve(&queue, &slots, &mut waiters, 300);
        for flow in ["a", "b", "c"] {
            assert_eq!(order.iter().filter(|w| *w == flow).count(), 100, "{flow}");
        }
        let rest = serve(&queue, &slots, &mut waiters, 300);
        for flow in ["a", "b", "c"] {
            assert_eq!(rest.iter().filter(|w| *w == flow).count(), 100, "{flow}");
        }
        assert!(queue.is_idle());
        // Work-conserving: a flow alone takes every grant.
        let alone = FairQueue::new(1000);
        let mut only: Vec<_> = (0..10).map(|_| ("a".to_string(), waiting(alone.join("a")))).collect();
        assert_eq!(serve(&alone, &slots, &mut only, 10), ["a"; 10]);
        assert!(alone.is_idle());
    }

    /// Calls that time out cost their flow nothing: with three of a's four calls gone, its
    /// fourth goes first, as if a had asked once (charged when they joined, it went after
    /// b's third). (Charged when they joined, a
    /// flood whose calls time out fell behind the others for service it never had: two
    /// replicas with 8, 4 and 4 clients gave the 8-client project 26 of 120 calls.)
    #[test]
    fn calls_that_gave_up_are_not_charged_to_their_flow() {
        let queue = FairQueue::new(100);
        let slots = Arc::new(Semaphore::new(10));
        let gone: Vec<_> = (0..3).map(|_| waiting(queue.join("a"))).collect();
        let mut waiters = vec![("a".to_string(), waiting(queue.join("a")))];
        for _ in 0..4 {
            waiters.push(("b".to_string(), waiting(queue.join("b"))));
        }
        drop(gone);
        assert_eq!(serve(&queue, &slots, &mut waiters, 3), ["a", "b", "b"]);
    }

    #[test]
    fn a_waiter_that_gave_up_is_skipped_and_a_flow_is_bounded() {
        let queue = FairQueue::new(2);
        let slots = Arc::new(Semaphore::new(10));
        let gone = waiting(queue.join("a"));
        let mut kept = vec![("a".to_string(), waiting(queue.join("a")))];
        assert!(matches!(queue.join("a"), Joined::Full));
        drop(gone);
        assert_eq!(serve(&queue, &slots, &mut kept, 1), ["a"]);
        // Nobody left: the grant comes back and the dispatcher is to stop.
        let grant = slots.clone().try_acquire_owned().unwrap();
        assert!(queue.hand_over(grant).is_some());
        assert!(queue.is_idle());
        assert!(matches!(queue.join("a"), Joined::Waiting { dispatch: true, .. }));
    }

    /// A waiter that gave up behind one still waiting does not hold its place against the
    /// bound: a flow whose clients went away mid-queue is not refused as full.
    #[test]
    fn waiters_that_gave_up_mid_queue_do_not_fill_the_flow() {
        let queue = FairQueue::new(3);
        let slots = Arc::new(Semaphore::new(10));
        let mut kept = vec![("a".to_string(), waiting(queue.join("a")))];
        let gone: Vec<_> = (0..2).map(|_| waiting(queue.join("a"))).collect();
        drop(gone);
        let joined = queue.join("a");
        assert!(matches!(joined, Joined::Waiting { .. }), "{joined:?}");
        kept.push(("a".to_string(), waiting(joined)));
        assert_eq!(serve(&queue, &slots, &mut kept, 2), ["a", "a"]);
        let grant = slots.clone().try_acquire_owned().unwrap();
        assert!(queue.hand_over(grant).is_some(), "the two gave-ups were gone, not served");
    }
}
