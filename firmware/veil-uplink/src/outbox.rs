//! Messages waiting for the broker. Telemetry is worth little once stale, so at most
//! `telemetry_capacity` wait and the oldest go first; events (job and request steps) are never
//! dropped while the process lives.

use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Debug)]
pub struct Outbox {
    events: VecDeque<Message>,
    telemetry: VecDeque<Message>,
    telemetry_capacity: usize,
    dropped_telemetry: u64,
}

impl Outbox {
    pub fn new(telemetry_capacity: usize) -> Outbox {
        Outbox {
            events: VecDeque::new(),
            telemetry: VecDeque::new(),
            telemetry_capacity: telemetry_capacity.max(1),
            dropped_telemetry: 0,
        }
    }

    pub fn push_event(&mut self, m: Message) {
        self.events.push_back(m);
    }

    pub fn push_telemetry(&mut self, m: Message) {
        if self.telemetry.len() == self.telemetry_capacity {
            self.telemetry.pop_front();
            self.dropped_telemetry += 1;
        }
        self.telemetry.push_back(m);
    }

    /// The next message to send: events first, in order, then telemetry, oldest first.
    pub fn pop(&mut self) -> Option<(Message, bool)> {
        if let Some(m) = self.events.pop_front() {
            return Some((m, true));
        }
        self.telemetry.pop_front().map(|m| (m, false))
    }

    /// Puts back a message that could not be handed to the client.
    pub fn unpop(&mut self, m: Message, event: bool) {
        if event {
            self.events.push_front(m);
        } else {
            self.telemetry.push_front(m);
        }
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.telemetry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dropped_telemetry(&self) -> u64 {
        self.dropped_telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str) -> Message {
        Message {
            topic: t.into(),
            payload: Vec::new(),
            retain: false,
        }
    }

    #[test]
    fn telemetry_drops_oldest_events_never() {
        let mut o = Outbox::new(2);
        for i in 0..5 {
            o.push_telemetry(m(&format!("t{i}")));
            o.push_event(m(&format!("e{i}")));
        }
        assert_eq!(o.len(), 7);
        assert_eq!(o.dropped_telemetry(), 3);
        let order: Vec<String> = std::iter::from_fn(|| o.pop().map(|(m, _)| m.topic)).collect();
        assert_eq!(order, ["e0", "e1", "e2", "e3", "e4", "t3", "t4"]);
        o.push_event(m("x"));
        let (first, event) = o.pop().unwrap();
        o.unpop(first, event);
        assert_eq!(o.pop().unwrap().0.topic, "x");
    }
}
