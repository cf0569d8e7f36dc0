//! Inbound messages: each consumer registers the topic filter it wants and
//! what to do with a message on it; the publisher subscribes to every
//! registered filter on each connect and hands each message to the first
//! route that matches. The publisher so knows no consumer by name.

/// A message from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The broker kept it and sent it because we subscribed (not live).
    pub retained: bool,
}

/// Hands a message on; runs on the MQTT driver's task, so it must never
/// wait (`try_send`). Returns false when the consumer could not take it
/// (its queue is full): the publisher counts that (`mqtt.inbound_dropped`).
pub type Deliver = Box<dyn Fn(Inbound) -> bool + Send + Sync>;

/// What became of an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Taken,
    /// The route's consumer could not take it; counted by the publisher.
    Refused,
    /// No route matches the topic.
    NoRoute,
}

struct Route {
    /// Who registered it, for logs.
    name: &'static str,
    filter: String,
    deliver: Deliver,
}

/// The table the consumers fill before the publisher starts.
#[derive(Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Messages on `filter` (MQTT syntax: `+` one level, `#` the rest) go to
    /// `deliver`, which counts (or logs) what it cannot take itself.
    pub fn add(&mut self, name: &'static str, filter: String, deliver: impl Fn(Inbound) + Send + Sync + 'static) {
        self.add_counted(name, filter, move |inbound| {
            deliver(inbound);
            true
        });
    }

    /// Like [`Routes::add`]; `deliver` returns false for a message it could
    /// not take, and the publisher counts it in telemetry.
    pub fn add_counted(&mut self, name: &'static str, filter: String, deliver: impl Fn(Inbound) -> bool + Send + Sync + 'static) {
        self.routes.push(Route { name, filter, deliver: Box::new(deliver) });
    }

    /// (consumer, filter) of every route, in registration order.
    pub fn filters(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.routes.iter().map(|r| (r.name, r.filter.as_str()))
    }

    /// Hands `inbound` to the first route whose filter matches.
    pub fn deliver(&self, inbound: Inbound) -> Delivery {
        match self.routes.iter().find(|r| filter_matches(&r.filter, &inbound.topic)) {
            Some(route) => {
                tracing::trace!(route = route.name, topic = %inbound.topic, bytes = inbound.payload.len(), "inbound message");
                if (route.deliver)(inbound) { Delivery::Taken } else { Delivery::Refused }
            }
            None => Delivery::NoRoute,
        }
    }
}

/// MQTT topic filter matching: `+` stands for one level, a final `#` for
/// any number of levels (including none).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (level, Some(t)) if level == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn filters_match_like_a_broker() {
        assert!(filter_matches("cctv/pole/cmd/+", "cctv/pole/cmd/ping"));
        assert!(!filter_matches("cctv/pole/cmd/+", "cctv/pole/cmd/ping/reply"));
        assert!(!filter_matches("cctv/pole/cmd/+", "cctv/pole/cmd"));
        assert!(filter_matches("cctv/pole/feedback", "cctv/pole/feedback"));
        assert!(!filter_matches("cctv/pole/feedback", "cctv/pole/feedbacks"));
        assert!(filter_matches("cctv/#", "cctv/a/b/c"));
        assert!(filter_matches("cctv/a/#", "cctv/a"));
        assert!(!filter_matches("cctv/fleet/models/+", "cctv/other/models/x"));
    }

    #[test]
    fn the_first_matching_route_gets_the_message_and_others_nothing() {
        let got: Arc<Mutex<Vec<(&str, String)>>> = Default::default();
        let mut routes = Routes::new();
        for (name, filter) in [("commands", "d/cmd/+"), ("feedback", "d/feedback"), ("all", "d/#")] {
            let got = got.clone();
            routes.add(name, filter.into(), move |m: Inbound| got.lock().unwrap().push((name, m.topic)));
        }
        let message = |topic: &str| Inbound { topic: topic.into(), payload: b"{}".to_vec(), retained: false };
        assert_eq!(routes.deliver(message("d/cmd/ping")), Delivery::Taken);
        assert_eq!(routes.deliver(message("d/feedback")), Delivery::Taken);
        assert_eq!(routes.deliver(message("d/other")), Delivery::Taken);
        assert_eq!(routes.deliver(message("elsewhere")), Delivery::NoRoute);
        assert_eq!(
            *got.lock().unwrap(),
            vec![("commands", "d/cmd/ping".to_string()), ("feedback", "d/feedback".into()), ("all", "d/other".into())]
        );
        assert_eq!(routes.filters().map(|(name, _)| name).collect::<Vec<_>>(), ["commands", "feedback", "all"]);
    }

    #[test]
    fn a_consumer_that_cannot_take_a_message_says_so() {
        let mut routes = Routes::new();
        routes.add_counted("commands", "d/cmd/+".into(), |_| false);
        let message = Inbound { topic: "d/cmd/ping".into(), payload: b"{}".to_vec(), retained: false };
        assert_eq!(routes.deliver(message), Delivery::Refused);
    }
}
