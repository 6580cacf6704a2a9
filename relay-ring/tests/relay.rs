//! The tokio halves of the relay end: AsyncRead/AsyncWrite, backpressure and wakeups through AsyncFd, zero-copy fill/peek/consume, close semantics.

#![cfg(not(loom))]

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::Duration;

use relay_ring::{DeviceEnd, RelayReader, RelayWriter, duplex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A hang guard, not a timing assertion: a lost wakeup would otherwise hang
/// the test run instead of failing it.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("a wakeup was lost: the test hung")
}

fn relay_pair(capacity: usize) -> (DeviceEnd, RelayReader, RelayWriter) {
    let (device, relay) = duplex(capacity).expect("duplex");
    let (reader, writer) = relay.into_split().expect("into_split");
    (device, reader, writer)
}

#[tokio::test]
async fn bytes_cross_in_both_directions() {
    let (mut device, mut reader, mut writer) = relay_pair(64);
    writer.write_all(b"to the guest").await.expect("write");
    let mut buf = [0; 64];
    let n = device.read(&mut buf).expect("device read");
    assert_eq!(&buf[..n], b"to the guest");

    device.write(b"to the host").expect("device write");
    let n = within(reader.read(&mut buf)).await.expect("read");
    assert_eq!(&buf[..n], b"to the host");
}

#[tokio::test]
async fn a_read_of_an_empty_ring_is_pending_until_the_device_writes() {
    let (mut device, mut reader, _writer) = relay_pair(16);
    let mut polls = 0;
    let ready = within(poll_fn(|cx| {
        polls += 1;
        let poll = reader.poll_fill(cx, 1);
        if polls == 1 {
            assert!(poll.is_pending(), "nothing to read yet");
            // The task is parked now; only this write's wakeup can resume it.
            device.write(b"x").expect("device write");
        }
        poll
    }))
    .await;
    assert_eq!(ready.expect("fill"), 1);
    assert!(polls >= 2);
    assert_eq!(reader.stats().data_wakeups, 1);
}

#[tokio::test]
async fn a_write_to_a_full_ring_is_pending_until_the_device_reads() {
    let (mut device, _reader, mut writer) = relay_pair(4);
    writer.write_all(b"full").await.expect("fill the ring");
    let mut polls = 0;
    let written = within(poll_fn(|cx| {
        polls += 1;
        let poll = Pin::new(&mut writer).poll_write(cx, b"xy");
        if polls == 1 {
            assert!(poll.is_pending(), "the ring is full");
            assert_eq!(device.read(&mut [0; 1]).expect("device read"), 1);
        }
        poll
    }))
    .await;
    assert_eq!(written.expect("write"), 1);
    let mut buf = [0; 4];
    assert_eq!(device.read(&mut buf).expect("device read"), 4);
    assert_eq!(&buf, b"ullx");
}

#[tokio::test]
async fn backpressure_moves_a_large_stream_through_a_small_ring_without_loss() {
    let (device, _reader, mut writer) = relay_pair(4096);
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let (mut device_reader, _device_writer) = device.split();
    let consumer = std::thread::spawn(move || {
        let mut received = Vec::new();
        let mut buf = [0; 1000];
        loop {
            match device_reader.read_blocking(&mut buf).expect("device read") {
                0 => return received,
                n => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    within(writer.write_all(&data)).await.expect("write");
    writer.shutdown().await.expect("shutdown");
    let stats = writer.stats();
    let received = tokio::task::spawn_blocking(move || consumer.join().expect("consumer"))
        .await
        .expect("join");
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "content differs");
    assert!(stats.space_wakeups <= stats.space_parks);
}

#[tokio::test]
async fn shutting_down_the_writer_gives_the_device_end_of_file() {
    let (mut device, _reader, mut writer) = relay_pair(16);
    writer.write_all(b"bye").await.expect("write");
    writer.shutdown().await.expect("shutdown");
    assert!(writer.is_closed());
    assert_eq!(
        writer.write(b"more").await.expect_err("closed").kind(),
        io::ErrorKind::BrokenPipe
    );
    let mut buf = [0; 8];
    assert_eq!(device.read(&mut buf).expect("read"), 3);
    assert_eq!(device.read(&mut buf).expect("eof"), 0);
}

#[tokio::test]
async fn dropping_the_writer_gives_the_device_end_of_file() {
    let (mut device, _reader, writer) = relay_pair(16);
    drop(writer);
    assert_eq!(device.read(&mut [0; 8]).expect("eof"), 0);
}

#[tokio::test]
async fn dropping_the_device_writer_ends_the_relay_stream_after_its_bytes() {
    let (device, mut reader, _writer) = relay_pair(16);
    let (_device_reader, mut device_writer) = device.split();
    device_writer.write(b"last words").expect("write");
    drop(device_writer);
    let mut all = Vec::new();
    within(reader.read_to_end(&mut all)).await.expect("read");
    assert_eq!(all, b"last words");
    assert!(reader.is_writer_closed());
}

#[tokio::test]
async fn dropping_the_device_writer_wakes_a_pending_reader() {
    let (device, mut reader, _writer) = relay_pair(16);
    let (_device_reader, device_writer) = device.split();
    let mut device_writer = Some(device_writer);
    let filled = within(poll_fn(|cx| {
        let poll = reader.poll_fill(cx, 1);
        if poll.is_pending() {
            drop(device_writer.take());
        }
        poll
    }))
    .await;
    assert_eq!(filled.expect("fill"), 0, "end of file");
}

#[tokio::test]
async fn dropping_the_device_reader_fails_a_pending_write_with_broken_pipe() {
    let (device, _reader, mut writer) = relay_pair(4);
    let (device_reader, _device_writer) = device.split();
    writer.write_all(b"full").await.expect("fill the ring");
    let mut device_reader = Some(device_reader);
    let result = within(poll_fn(|cx| {
        let poll = Pin::new(&mut writer).poll_write(cx, b"x");
        if poll.is_pending() {
            drop(device_reader.take());
        }
        poll
    }))
    .await;
    assert_eq!(
        result.expect_err("reader gone").kind(),
        io::ErrorKind::BrokenPipe
    );
}

#[tokio::test]
async fn vectored_writes_fill_the_ring_from_several_slices() {
    let (mut device, _reader, mut writer) = relay_pair(8);
    assert!(writer.is_write_vectored());
    let bufs = [
        IoSlice::new(b"ab"),
        IoSlice::new(b""),
        IoSlice::new(b"cde"),
        IoSlice::new(b"fghij"),
    ];
    let n = within(writer.write_vectored(&bufs)).await.expect("write");
    assert_eq!(n, 8, "stops where the ring is full");
    let mut buf = [0; 8];
    assert_eq!(device.read(&mut buf).expect("read"), 8);
    assert_eq!(&buf, b"abcdefgh");
    let empty = [IoSlice::new(b"")];
    assert_eq!(writer.write_vectored(&empty).await.expect("write"), 0);
}

#[tokio::test]
async fn fill_waits_until_the_requested_minimum_is_readable() {
    let (mut device, mut reader, _writer) = relay_pair(16);
    let mut writes = 0;
    let filled = within(poll_fn(|cx| {
        let poll = reader.poll_fill(cx, 3);
        if poll.is_pending() {
            // Trickle one byte per wakeup.
            device.write(&[writes]).expect("device write");
            writes += 1;
        }
        poll
    }))
    .await;
    assert_eq!(filled.expect("fill"), 3);
    assert_eq!(writes, 3);
    assert_eq!(reader.peek(), (&[0, 1, 2][..], &[][..]));
}

#[tokio::test]
async fn a_minimum_above_the_capacity_waits_for_a_full_ring() {
    let (mut device, mut reader, _writer) = relay_pair(4);
    device.write(b"abcd").expect("device write");
    assert_eq!(within(reader.fill(1000)).await.expect("fill"), 4);
}

#[tokio::test]
async fn fill_returns_less_than_the_minimum_only_at_end_of_file() {
    let (mut device, mut reader, _writer) = relay_pair(16);
    device.write(b"ab").expect("device write");
    drop(device);
    assert_eq!(within(reader.fill(4)).await.expect("fill"), 2);
    reader.consume(2);
    assert_eq!(within(reader.fill(1)).await.expect("fill"), 0);
}

#[tokio::test]
async fn peek_shows_wrapped_data_as_two_slices_and_consume_frees_space() {
    let (mut device, mut reader, _writer) = relay_pair(8);
    device.write(b"123456").expect("device write");
    within(reader.fill(6)).await.expect("fill");
    reader.consume(5);
    device.write(b"abcde").expect("device write");
    assert_eq!(within(reader.fill(6)).await.expect("fill"), 6);
    assert_eq!(reader.peek(), (&b"6ab"[..], &b"cde"[..]));
    reader.consume(6);
    assert_eq!(reader.stats().len, 0);
}

#[tokio::test]
async fn in_place_writes_reach_the_device() {
    let (mut device, _reader, mut writer) = relay_pair(8);
    let free = within(poll_fn(|cx| writer.poll_reserve(cx)))
        .await
        .expect("reserve");
    assert_eq!(free, 8);
    writer.spare_slices().0[..3].copy_from_slice(b"xyz");
    writer.commit(3);
    let mut buf = [0; 8];
    assert_eq!(device.read(&mut buf).expect("read"), 3);
    assert_eq!(&buf[..3], b"xyz");
}

#[tokio::test]
async fn async_read_copies_wrapped_data_in_order_into_a_small_buffer() {
    let (mut device, mut reader, _writer) = relay_pair(8);
    device.write(b"1234567").expect("device write");
    let mut buf = [0; 7];
    within(reader.read_exact(&mut buf)).await.expect("read");
    device.write(b"abcdef").expect("device write");
    let mut small = [0; 4];
    let mut read_buf = ReadBuf::new(&mut small);
    within(poll_fn(|cx| {
        Pin::new(&mut reader).poll_read(cx, &mut read_buf)
    }))
    .await
    .expect("read");
    assert_eq!(read_buf.filled(), b"abcd");
    let mut rest = [0; 2];
    within(reader.read_exact(&mut rest)).await.expect("read");
    assert_eq!(&rest, b"ef");
}

#[test]
fn splitting_outside_a_runtime_is_an_error_and_works_later_inside_one() {
    let (mut device, relay) = duplex(16).expect("duplex");
    device
        .write(b"early")
        .expect("device write before any runtime exists");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (mut reader, _writer) = relay.into_split().expect("inside a runtime");
        let mut buf = [0; 5];
        within(reader.read_exact(&mut buf)).await.expect("read");
        assert_eq!(&buf, b"early");
    });
    let (_device, relay) = duplex(16).expect("duplex");
    let err = relay.into_split().expect_err("no runtime");
    assert_eq!(err.kind(), io::ErrorKind::Other);
}

#[tokio::test]
async fn the_relay_monitor_sees_both_rings() {
    let (mut device, relay) = duplex(32).expect("duplex");
    let monitor = relay.monitor();
    let (_reader, mut writer) = relay.into_split().expect("into_split");
    writer.write_all(b"12345").await.expect("write");
    device.write(b"abc").expect("device write");
    let stats = monitor.snapshot();
    assert_eq!((stats.host_to_guest.len, stats.guest_to_host.len), (5, 3));
    assert_eq!(
        (stats.host_to_guest.capacity, stats.guest_to_host.capacity),
        (32, 32)
    );
}

#[tokio::test]
async fn zero_length_reads_and_writes_complete_at_once() {
    let (_device, mut reader, mut writer) = relay_pair(4);
    writer.write_all(b"full").await.expect("write");
    assert_eq!(writer.write(b"").await.expect("write"), 0);
    assert_eq!(reader.read(&mut []).await.expect("read"), 0);
}

/// The traits the server relies on, checked at compile time.
#[test]
fn the_relay_halves_are_send_and_unpin_async_io() {
    fn assert_traits<T: Send + Unpin + 'static>() {}
    fn assert_read<T: AsyncRead>() {}
    fn assert_write<T: AsyncWrite>() {}
    assert_traits::<RelayReader>();
    assert_traits::<RelayWriter>();
    assert_traits::<relay_ring::RelayEnd>();
    assert_read::<RelayReader>();
    assert_write::<RelayWriter>();
}
