//! Threaded stress: patterned bytes in random chunk sizes through a 4 KiB ring, content verified, every wait on an eventfd.
//!
//! Each test moves `RELAY_RING_STRESS_BYTES` bytes (default: 1 GiB in release
//! builds, 64 MiB in debug builds, so that `cargo test` stays fast).

#![cfg(not(loom))]

mod support;

use relay_ring::{DeviceReader, DeviceWriter, RingStats};
use support::{PERIOD, Pattern, Rng, stress_bytes};
use tokio::io::AsyncWriteExt;

const RING: usize = 4096;
/// Chunks range from 1 byte to a little over two rings' worth.
const MAX_CHUNK: usize = 9000;

/// Writes `total` pattern bytes in random chunks, blocking on the eventfd when full.
fn produce(mut writer: DeviceWriter, total: u64, seed: u64) -> RingStats {
    let pattern = Pattern::new();
    let mut rng = Rng::new(seed);
    let mut sent = 0u64;
    while sent < total {
        let len = rng
            .size(MAX_CHUNK)
            .min(usize::try_from(total - sent).unwrap_or(usize::MAX));
        writer
            .write_all_blocking(pattern.at(sent, len))
            .expect("write");
        sent += len as u64;
    }
    writer.stats()
}

/// Reads until end-of-file in random chunks, blocking on the eventfd when
/// empty, checking every byte against the pattern; returns the byte count.
fn consume(mut reader: DeviceReader, seed: u64) -> (u64, RingStats) {
    let pattern = Pattern::new();
    let mut rng = Rng::new(seed);
    let mut buf = vec![0; MAX_CHUNK.min(PERIOD)];
    let mut received = 0u64;
    loop {
        let len = rng.size(buf.len());
        match reader.read_blocking(&mut buf[..len]).expect("read") {
            0 => return (received, reader.stats()),
            n => {
                assert!(
                    buf[..n] == *pattern.at(received, n),
                    "corrupt bytes at offset {received}"
                );
                received += n as u64;
            }
        }
    }
}

fn assert_coalesced(stats: &RingStats) {
    assert!(stats.data_wakeups <= stats.data_parks, "{stats:?}");
    assert!(stats.space_wakeups <= stats.space_parks, "{stats:?}");
}

#[test]
fn patterned_bytes_cross_a_4_kib_ring_between_blocking_threads_intact() {
    let total = stress_bytes();
    let (writer, reader) = relay_ring::pipe(RING).expect("pipe");
    let producer = std::thread::spawn(move || produce(writer, total, 1));
    let (received, stats) = consume(reader, 2);
    producer.join().expect("producer");
    assert_eq!(received, total);
    assert_eq!(stats.bytes_read, total);
    assert_coalesced(&stats);
    eprintln!("{total} bytes through a {RING}-byte ring: {stats:?}");
}

#[test]
fn patterned_bytes_cross_a_duplex_both_ways_at_once_with_a_tokio_relay() {
    let total = stress_bytes() / 2;
    let (device, relay) = relay_ring::duplex(RING).expect("duplex");
    let monitor = device.monitor();
    let (device_reader, device_writer) = device.split();
    let guest_out = std::thread::spawn(move || produce(device_writer, total, 3));
    let guest_in = std::thread::spawn(move || consume(device_reader, 4));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let relay_received = runtime.block_on(async move {
        let (mut reader, mut writer) = relay.into_split().expect("into_split");
        let to_guest = tokio::spawn(async move {
            let pattern = Pattern::new();
            let mut rng = Rng::new(5);
            let mut sent = 0u64;
            while sent < total {
                let len = rng
                    .size(MAX_CHUNK)
                    .min(usize::try_from(total - sent).unwrap_or(usize::MAX));
                writer
                    .write_all(pattern.at(sent, len))
                    .await
                    .expect("relay write");
                sent += len as u64;
            }
            writer.shutdown().await.expect("shutdown");
        });
        // The relay reads the guest's stream in place, as the server does.
        let pattern = Pattern::new();
        let mut rng = Rng::new(6);
        let mut received = 0u64;
        loop {
            let wanted = rng.size(RING);
            let available = reader.fill(wanted).await.expect("fill");
            if available == 0 {
                break;
            }
            let (first, second) = reader.peek();
            let take = available.min(wanted);
            let split = take.min(first.len());
            assert!(
                first[..split] == *pattern.at(received, split),
                "corrupt bytes at offset {received}"
            );
            let rest = take - split;
            assert!(
                second[..rest] == *pattern.at(received + split as u64, rest),
                "corrupt bytes at offset {}",
                received + split as u64
            );
            reader.consume(take);
            received += take as u64;
        }
        to_guest.await.expect("relay writer task");
        received
    });

    guest_out.join().expect("device writer");
    let (guest_received, _) = guest_in.join().expect("device reader");
    assert_eq!(relay_received, total);
    assert_eq!(guest_received, total);
    let stats = monitor.snapshot();
    assert_coalesced(&stats.guest_to_host);
    assert_coalesced(&stats.host_to_guest);
}
