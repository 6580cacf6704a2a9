//! The relay over a fresh ring with relay-test-support's scripted agent on
//! the device end, and the names the tests use from that crate.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a test support module: each test file uses a different part"
)]

use std::path::PathBuf;

use relay_codec::Frame;
use relay_server::{Relay, RelayConfig, RelayHandle, StatsSnapshot};
use relay_test_support::{
    Behaviour, RawClient, ScriptedAgent, TempDir, eventually, ready_frame, temp_dir,
};

/// The agent of every harness: a scripted agent with a boxed behaviour.
pub type TestAgent = ScriptedAgent<Behaviour>;

/// A relay over a fresh ring with a test agent on the other end.
pub struct Harness {
    pub relay: RelayHandle,
    pub agent: TestAgent,
    pub dir: TempDir,
}

impl Harness {
    pub async fn start(
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        Harness::start_with_ring(1 << 16, config, behaviour).await
    }

    pub async fn start_with_ring(
        ring: usize,
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        Harness::start_with_ready(ring, ready_frame(1), config, behaviour).await
    }

    /// A harness whose agent greets with `ready` (e.g. one offering flow control).
    pub async fn start_with_ready(
        ring: usize,
        ready: Frame,
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        let mut harness = Harness::unready(ring, config, behaviour);
        harness.agent.send(&ready);
        assert!(
            harness.relay.ready().await,
            "the relay ended before core.ready"
        );
        harness
    }

    /// A relay still waiting for its agent's `core.ready`, which has sent nothing.
    pub fn unready(
        ring: usize,
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        let dir = temp_dir();
        let (device, relay_end) = relay_ring::duplex(ring).unwrap();
        let agent = TestAgent::on_ring(device, behaviour);
        let config = config(RelayConfig::new(dir.path().join("agent.sock")));
        let relay = Relay::start_on_ring(config, relay_end).unwrap();
        Harness { relay, agent, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub async fn client(&self) -> RawClient {
        RawClient::connect(&self.socket()).await
    }

    /// Polls the relay's stats until `pred` holds, and returns them.
    pub async fn wait_stats(
        &self,
        what: &str,
        pred: impl Fn(&StatsSnapshot) -> bool,
    ) -> StatsSnapshot {
        eventually(what, || {
            let stats = self.relay.stats();
            pred(&stats).then_some(stats)
        })
        .await
    }
}
