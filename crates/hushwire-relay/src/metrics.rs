//! Prometheus metrics. Counts and sizes only: no identifiers, no payload bytes.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Frames received.
    pub frames_in: Counter,
    /// Frames sent.
    pub frames_out: Counter,
    /// Envelopes stored durably.
    pub envelopes_stored: Counter,
    /// Envelopes delivered (sent to a connected recipient; redeliveries count again).
    pub envelopes_delivered: Counter,
    /// Envelopes expired unread.
    pub envelopes_expired: Counter,
    /// Times a connection's live queue overflowed, so it read its mailbox instead
    /// (`live.rs`): a slow reader, or a burst larger than one delivery round.
    pub live_overflows: Counter,
    /// Envelopes waiting, as of the last expiry sweep.
    pub queue_depth: Gauge,
    /// Time for a store operation to become durable, in seconds.
    pub store_latency: Histogram,
    /// Refusals, by `reason` (names in `docs/relay-protocol.md` §6).
    refusals: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Failed authentications and registrations, by `reason`.
    auth_failures: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Devices registered (new registrations only, not retried ones).
    pub registrations: Counter,
    /// Provisioning messages filed (device linking).
    pub provisioning_puts: Counter,
    /// Provisioning messages handed out (a take that found nothing is not counted).
    pub provisioning_takes: Counter,
    /// Claims of a conversation in the queue that won.
    pub claims_won: Counter,
    /// Claims that lost (answered `AlreadyClaimed`).
    pub claims_lost: Counter,
    /// Membership changes the relay refused, by the rule they broke (`conversations.md` §4.3).
    membership_refusals: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hushwire_relay");
        let m = Self {
            connections: Counter::default(),
            open_connections: Gauge::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            envelopes_stored: Counter::default(),
            envelopes_delivered: Counter::default(),
            envelopes_expired: Counter::default(),
            live_overflows: Counter::default(),
            queue_depth: Gauge::default(),
            store_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            refusals: Family::default(),
            auth_failures: Family::default(),
            registrations: Counter::default(),
            provisioning_puts: Counter::default(),
            provisioning_takes: Counter::default(),
            claims_won: Counter::default(),
            claims_lost: Counter::default(),
            membership_refusals: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Connections accepted", m.connections.clone());
        registry.register(
            "open_connections",
            "Connections open now",
            m.open_connections.clone(),
        );
        registry.register("frames_in", "Frames received", m.frames_in.clone());
        registry.register("frames_out", "Frames sent", m.frames_out.clone());
        registry.register(
            "envelopes_stored",
            "Envelopes stored durably",
            m.envelopes_stored.clone(),
        );
        registry.register(
            "envelopes_delivered",
            "Envelopes delivered",
            m.envelopes_delivered.clone(),
        );
        registry.register(
            "envelopes_expired",
            "Envelopes expired unread",
            m.envelopes_expired.clone(),
        );
        registry.register(
            "live_overflows",
            "Live delivery queues that overflowed (the connection read its mailbox instead)",
            m.live_overflows.clone(),
        );
        registry.register("queue_depth", "Envelopes waiting", m.queue_depth.clone());
        registry.register(
            "store_latency_seconds",
            "Time for a store write to become durable",
            m.store_latency.clone(),
        );
        registry.register(
            "refusals",
            "Requests and connections refused, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications and registrations, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "registrations",
            "Devices registered",
            m.registrations.clone(),
        );
        registry.register(
            "provisioning_puts",
            "Provisioning messages filed for device linking",
            m.provisioning_puts.clone(),
        );
        registry.register(
            "provisioning_takes",
            "Provisioning messages handed out",
            m.provisioning_takes.clone(),
        );
        registry.register(
            "claims_won",
            "Conversation claims that won",
            m.claims_won.clone(),
        );
        registry.register(
            "claims_lost",
            "Conversation claims answered AlreadyClaimed",
            m.claims_lost.clone(),
        );
        registry.register(
            "membership_refusals",
            "Membership changes refused, by rule",
            m.membership_refusals.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts one failed authentication or registration under `reason`.
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one refusal under `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Counts one refused membership change under its rule's name.
    pub fn membership_refused(&self, rule: &'static str) {
        self.membership_refusals
            .get_or_create(&vec![("rule", rule)])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
