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
/// wait (`try_send`, and count or log what does not fit).
pub type Deliver = Box<dyn Fn(Inbound) + Send + Sync>;

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

    /// Messages on `filter` (MQTT syntax: `+` one level, `#` the rest) go to `deliver`.
    pub fn add(&mut self, name: &'static str, filter: String, deliver: impl Fn(Inbound) + Send + Sync + 'static) {
        self.routes.push(Route { name, filter, deliver: Box::new(deliver) });
    }

    /// (consumer, filter) of every route, in registration order.
    pub fn filters(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.routes.iter().map(|r| (r.name, r.filter.as_str()))
    }

    /// Hands `inbound` to the first route whose filter matches; false if none does.
    pub fn deliver(&self, inbound: Inbound) -> bool {
        match self.routes.iter().find(|r| filter_matches(&r.filter, &inbound.topic)) {
            Some(route) => {
                tracing::trace!(route = route.name, topic = %inbound.topic, bytes = inbound.payload.len(), "inbound message");
                (route.deliver)(inbound);
                true
            }
            None => false,
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
        assert!(routes.deliver(message("d/cmd/ping")));
        assert!(routes.deliver(message("d/feedback")));
        assert!(routes.deliver(message("d/other")));
        assert!(!routes.deliver(message("elsewhere")));
        assert_eq!(
            *got.lock().unwrap(),
            vec![("commands", "d/cmd/ping".to_string()), ("feedback", "d/feedback".into()), ("all", "d/other".into())]
        );
        assert_eq!(routes.filters().map(|(name, _)| name).collect::<Vec<_>>(), ["commands", "feedback", "all"]);
    }
}
