//! The synchronous halves (device end and `pipe`): non-blocking calls, fd readiness, close semantics, coalescing, blocking helpers.

#![cfg(not(loom))]

mod support;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use relay_ring::{CapacityError, DeviceReader, DeviceWriter, RingMonitor};
use support::fd_is_readable;

fn would_block<T: std::fmt::Debug>(result: io::Result<T>) -> bool {
    match result {
        Err(err) => err.kind() == io::ErrorKind::WouldBlock,
        Ok(value) => panic!("expected WouldBlock, got Ok({value:?})"),
    }
}

fn kind<T: std::fmt::Debug>(result: io::Result<T>) -> io::ErrorKind {
    result.expect_err("expected an error").kind()
}

fn pipe(capacity: usize) -> (DeviceWriter, DeviceReader) {
    relay_ring::pipe(capacity).expect("pipe")
}

#[test]
fn a_capacity_that_is_not_a_power_of_two_is_invalid_input() {
    for capacity in [0, 3, 4095] {
        let err = relay_ring::duplex(capacity).expect_err("rejected");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<CapacityError>());
        assert_eq!(inner, Some(&CapacityError::NotPowerOfTwo { capacity }));
    }
}

#[test]
fn reading_an_empty_ring_would_block_and_leaves_the_fd_quiet() {
    let (_writer, mut reader) = pipe(16);
    assert!(would_block(reader.read(&mut [0; 4])));
    assert!(!fd_is_readable(reader.as_fd()));
}

#[test]
fn the_read_fd_becomes_readable_exactly_when_data_arrives() {
    let (mut writer, mut reader) = pipe(16);
    assert!(would_block(reader.read(&mut [0; 4])));
    assert!(!fd_is_readable(reader.as_fd()));
    writer.write(b"a").expect("write");
    assert!(fd_is_readable(reader.as_fd()));
    let mut buf = [0; 4];
    assert_eq!(reader.read(&mut buf).expect("read"), 1);
    assert_eq!(buf[0], b'a');
    // Empty again: the next WouldBlock drains the old token.
    assert!(would_block(reader.read(&mut buf)));
    assert!(!fd_is_readable(reader.as_fd()));
}

#[test]
fn writes_to_a_reader_that_is_not_waiting_leave_the_fd_quiet() {
    let (mut writer, reader) = pipe(16);
    writer.write(b"abc").expect("write");
    assert!(!fd_is_readable(reader.as_fd()));
    assert_eq!(writer.stats().data_wakeups, 0);
}

#[test]
fn the_write_fd_becomes_readable_exactly_when_space_frees_up() {
    let (mut writer, mut reader) = pipe(4);
    assert_eq!(writer.write(b"abcd").expect("write"), 4);
    assert!(!fd_is_readable(writer.as_fd()));
    assert!(would_block(writer.write(b"e")));
    assert!(!fd_is_readable(writer.as_fd()));
    assert_eq!(reader.read(&mut [0; 1]).expect("read"), 1);
    assert!(fd_is_readable(writer.as_fd()));
    assert_eq!(writer.write(b"ef").expect("write"), 1);
    assert!(would_block(writer.write(b"f")));
    assert!(!fd_is_readable(writer.as_fd()));
}

#[test]
fn a_write_larger_than_the_free_space_is_partial() {
    let (mut writer, mut reader) = pipe(8);
    assert_eq!(writer.write(b"0123456789").expect("write"), 8);
    let mut buf = [0; 16];
    assert_eq!(reader.read(&mut buf).expect("read"), 8);
    assert_eq!(&buf[..8], b"01234567");
}

#[test]
fn zero_length_calls_return_zero_even_on_an_empty_or_full_ring() {
    let (mut writer, mut reader) = pipe(4);
    assert_eq!(reader.read(&mut []).expect("read"), 0);
    assert_eq!(writer.write(&[]).expect("write"), 0);
    writer.write(b"abcd").expect("write");
    assert_eq!(writer.write(&[]).expect("write"), 0);
    assert_eq!(
        writer
            .write_vectored(&[io::IoSlice::new(&[])])
            .expect("write"),
        0
    );
    assert_eq!(reader.read(&mut []).expect("read"), 0);
    let stats = reader.stats();
    assert_eq!(
        (stats.data_parks, stats.space_parks),
        (0, 0),
        "zero-length calls never park"
    );
}

#[test]
fn bytes_survive_many_trips_around_the_ring_in_odd_sizes() {
    let (mut writer, mut reader) = pipe(8);
    let mut next_in = 0u8;
    let mut next_out = 0u8;
    for round in 0..500usize {
        let chunk: Vec<u8> = (0..u8::try_from(round % 7 + 1).expect("small"))
            .map(|i| next_in.wrapping_add(i))
            .collect();
        let n = match writer.write(&chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(err) => panic!("{err}"),
        };
        next_in = next_in.wrapping_add(u8::try_from(n).expect("small"));
        let mut buf = vec![0; round % 5 + 1];
        if let Ok(n) = reader.read(&mut buf) {
            for byte in &buf[..n] {
                assert_eq!(*byte, next_out);
                next_out = next_out.wrapping_add(1);
            }
        }
    }
    assert!(
        reader.stats().bytes_read > 8 * 50,
        "the data went around the ring many times"
    );
}

#[test]
fn many_writes_to_a_parked_reader_make_one_wakeup() {
    let (mut writer, mut reader) = pipe(4096);
    assert!(would_block(reader.read(&mut [0; 1])));
    for _ in 0..100 {
        writer.write(b"x").expect("write");
    }
    let stats = writer.stats();
    assert_eq!((stats.data_parks, stats.data_wakeups), (1, 1));
    let mut buf = [0; 200];
    assert_eq!(reader.read(&mut buf).expect("read"), 100);
}

#[test]
fn a_busy_reader_and_writer_make_no_wakeups() {
    let (mut writer, mut reader) = pipe(64);
    for _ in 0..1000 {
        writer.write(b"0123456789").expect("write");
        assert_eq!(reader.read(&mut [0; 10]).expect("read"), 10);
    }
    let stats = reader.stats();
    assert_eq!((stats.data_wakeups, stats.space_wakeups), (0, 0));
    assert_eq!(stats.bytes_written, 10_000);
}

#[test]
fn dropping_the_writer_means_end_of_file_after_the_remaining_bytes() {
    let (mut writer, mut reader) = pipe(16);
    writer.write(b"tail").expect("write");
    drop(writer);
    assert!(reader.is_writer_closed());
    let mut buf = [0; 16];
    assert_eq!(reader.read(&mut buf).expect("read"), 4);
    assert_eq!(&buf[..4], b"tail");
    assert_eq!(reader.read(&mut buf).expect("eof"), 0);
    assert_eq!(reader.read(&mut buf).expect("eof stays"), 0);
    assert_eq!(reader.read_blocking(&mut buf).expect("eof"), 0);
}

#[test]
fn dropping_the_writer_wakes_a_parked_reader() {
    let (writer, mut reader) = pipe(16);
    assert!(would_block(reader.read(&mut [0; 4])));
    drop(writer);
    assert!(fd_is_readable(reader.as_fd()));
    assert_eq!(reader.read(&mut [0; 4]).expect("eof"), 0);
}

#[test]
fn a_closed_writer_refuses_writes_and_the_reader_sees_end_of_file() {
    let (mut writer, mut reader) = pipe(16);
    writer.write(b"x").expect("write");
    writer.close();
    writer.close();
    assert!(writer.is_closed());
    assert_eq!(kind(writer.write(b"y")), io::ErrorKind::BrokenPipe);
    assert_eq!(reader.read(&mut [0; 4]).expect("read"), 1);
    assert_eq!(reader.read(&mut [0; 4]).expect("eof"), 0);
}

#[test]
fn dropping_the_reader_makes_writes_fail_with_broken_pipe() {
    let (mut writer, reader) = pipe(16);
    drop(reader);
    assert_eq!(kind(writer.write(b"x")), io::ErrorKind::BrokenPipe);
    assert_eq!(kind(writer.reserve()), io::ErrorKind::BrokenPipe);
    assert_eq!(
        kind(writer.write_all_blocking(b"x")),
        io::ErrorKind::BrokenPipe
    );
}

#[test]
fn dropping_the_reader_wakes_a_writer_parked_on_a_full_ring() {
    let (mut writer, reader) = pipe(4);
    writer.write(b"full").expect("write");
    assert!(would_block(writer.write(b"x")));
    drop(reader);
    assert!(fd_is_readable(writer.as_fd()));
    assert_eq!(kind(writer.write(b"x")), io::ErrorKind::BrokenPipe);
}

#[test]
fn a_blocked_writer_thread_is_released_with_broken_pipe_when_the_reader_leaves() {
    let (mut writer, reader) = pipe(4);
    let thread = std::thread::spawn(move || writer.write_all_blocking(&[0; 64]));
    // Wait until the writer has filled the ring and parked, then leave.
    while reader.stats().space_parks == 0 {
        std::thread::yield_now();
    }
    drop(reader);
    assert_eq!(
        kind(thread.join().expect("writer thread")),
        io::ErrorKind::BrokenPipe
    );
}

#[test]
fn the_blocking_helpers_move_data_between_threads() {
    let (mut writer, mut reader) = pipe(64);
    let data: Vec<u8> = (0..100_000u32)
        .map(|i| i.to_le_bytes()[0] ^ i.to_le_bytes()[1])
        .collect();
    let expected = data.clone();
    let thread = std::thread::spawn(move || writer.write_all_blocking(&data));
    let mut received = Vec::new();
    let mut buf = [0; 37];
    loop {
        match reader.read_blocking(&mut buf).expect("read") {
            0 => break,
            n => received.extend_from_slice(&buf[..n]),
        }
    }
    thread.join().expect("writer thread").expect("write_all");
    assert_eq!(received, expected);
    let stats = reader.stats();
    assert!(stats.data_wakeups <= stats.data_parks && stats.space_wakeups <= stats.space_parks);
}

#[test]
fn std_io_copy_works_through_the_blocking_adapters() {
    let (mut writer, mut reader) = pipe(16);
    let thread = std::thread::spawn(move || {
        let mut source: &[u8] = &[7; 1000];
        io::copy(&mut source, &mut writer.blocking()).expect("copy");
        writer.blocking().flush().expect("flush");
    });
    let mut received = Vec::new();
    reader.blocking().read_to_end(&mut received).expect("read");
    thread.join().expect("writer thread");
    assert_eq!(received, vec![7; 1000]);
}

#[test]
fn waiting_for_data_with_a_timeout_returns_false_when_none_comes() {
    let (_writer, mut reader) = pipe(16);
    assert!(
        !reader
            .wait_readable(Some(Duration::from_millis(1)))
            .expect("wait")
    );
    assert!(!reader.wait_readable(Some(Duration::ZERO)).expect("wait"));
}

#[test]
fn waiting_reports_readiness_that_is_already_there() {
    let (mut writer, mut reader) = pipe(4);
    writer.write(b"abcd").expect("write");
    assert!(reader.wait_readable(Some(Duration::ZERO)).expect("wait"));
    assert!(!writer.wait_writable(Some(Duration::ZERO)).expect("wait"));
    drop(reader);
    assert!(
        writer
            .wait_writable(Some(Duration::ZERO))
            .expect("a gone reader makes writes fail at once")
    );
}

#[test]
fn in_place_reads_and_writes_see_the_ring_memory_across_the_wrap() {
    let (mut writer, mut reader) = pipe(8);
    writer.write(b"123456").expect("write");
    reader.consume(5);
    assert_eq!(writer.reserve().expect("space"), 7);
    let (first, second) = writer.spare_slices();
    assert_eq!((first.len(), second.len()), (2, 5));
    first.copy_from_slice(b"ab");
    second[..2].copy_from_slice(b"cd");
    writer.commit(4);
    assert_eq!(reader.fill().expect("data"), 5);
    assert_eq!(reader.peek(), (&b"6ab"[..], &b"cd"[..]));
    reader.consume(5);
    assert!(would_block(reader.fill()));
    drop(writer);
    assert_eq!(reader.fill().expect("eof"), 0);
}

#[test]
fn committing_in_place_wakes_a_parked_reader() {
    let (mut writer, mut reader) = pipe(8);
    assert!(would_block(reader.fill()));
    writer.spare_slices().0[0] = b'z';
    writer.commit(1);
    assert!(fd_is_readable(reader.as_fd()));
    assert_eq!(reader.peek().0, b"z");
}

#[test]
fn consuming_in_place_wakes_a_parked_writer() {
    let (mut writer, mut reader) = pipe(2);
    writer.write(b"ab").expect("write");
    assert!(would_block(writer.reserve()));
    reader.consume(1);
    assert!(fd_is_readable(writer.as_fd()));
    assert_eq!(writer.reserve().expect("space"), 1);
}

#[test]
fn a_device_end_splits_into_halves_that_can_live_on_other_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<DeviceReader>();
    assert_send::<DeviceWriter>();
    assert_send::<relay_ring::DeviceEnd>();
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<RingMonitor>();

    let (device, _relay) = relay_ring::duplex(16).expect("duplex");
    assert_ne!(
        device.readable_fd().as_raw_fd(),
        device.writable_fd().as_raw_fd()
    );
    let (reader, writer) = device.split();
    std::thread::spawn(move || drop((reader, writer)))
        .join()
        .expect("thread");
}

#[test]
fn the_monitor_reports_the_occupancy_and_capacity_of_both_rings() {
    let (mut device, _relay) = relay_ring::duplex(1024).expect("duplex");
    let monitor = device.monitor();
    device.write(&[0; 100]).expect("write");
    let stats = monitor.clone().snapshot();
    assert_eq!(stats.guest_to_host.capacity, 1024);
    assert_eq!(stats.guest_to_host.len, 100);
    assert_eq!(stats.guest_to_host.bytes_written, 100);
    assert_eq!(stats.host_to_guest.capacity, 1024);
    assert_eq!(stats.host_to_guest.len, 0);
    drop(device);
    assert!(monitor.guest_to_host().writer_closed);
    assert!(monitor.host_to_guest().reader_closed);
}
