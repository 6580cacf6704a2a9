//! Loom models of the ring's memory ordering and of the parked-flag wakeup protocol.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p relay-ring --release --lib
//! --target-dir target/loom loom`. Under loom the atomics, the per-byte access
//! tracking and the eventfd are models (see `sync.rs` and `event.rs`), so loom
//! explores every interleaving of these small scenarios up to the preemption
//! bound and reports:
//! - a lost wakeup as a deadlock (every thread blocked on a modelled eventfd);
//! - a byte read or written without the happens-before edge of the ring
//!   protocol as a data race on its shadow cell;
//! - wrong bytes, or the wrong close result, as a failed assertion.
//!
//! Both ends block only through the public blocking helpers, which park on the
//! eventfd: loom cannot explore spin loops.

use std::io;

use loom::thread;

/// Runs `scenario` under loom. The default preemption bound of 3 covers
/// every schedule with up to three forced thread switches and keeps the whole
/// file to seconds; `LOOM_MAX_PREEMPTIONS` overrides it.
fn model(scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(scenario);
}

/// Reads until end-of-file with the blocking helper.
fn read_to_end(reader: &mut crate::DeviceReader, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; chunk];
    loop {
        match reader.read_blocking(&mut buf).expect("read") {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_reader_waiting_for_data_is_always_woken() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(4).expect("pipe");
        let producer = thread::spawn(move || {
            assert_eq!(writer.write(&[7]).expect("write"), 1);
            // Keep the writer open: only the data wakeup can end the reader's wait.
            writer
        });
        let mut buf = [0; 4];
        assert_eq!(reader.read_blocking(&mut buf).expect("read"), 1);
        assert_eq!(buf[0], 7);
        drop(producer.join().expect("producer"));
    });
}

#[test]
fn a_writer_waiting_for_space_is_always_woken() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(1).expect("pipe");
        let producer = thread::spawn(move || {
            // Two bytes through a one-byte ring: the second waits for space.
            writer.write_all_blocking(&[1, 2]).expect("write");
            writer
        });
        let mut buf = [0; 1];
        let mut got = Vec::new();
        while got.len() < 2 {
            let n = reader.read_blocking(&mut buf).expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [1, 2]);
        drop(producer.join().expect("producer"));
    });
}

#[test]
fn bytes_arrive_whole_and_in_order_across_the_wrap() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(2).expect("pipe");
        let producer = thread::spawn(move || {
            writer.write_all_blocking(&[1, 2, 3]).expect("write");
        });
        assert_eq!(read_to_end(&mut reader, 2), [1, 2, 3]);
        producer.join().expect("producer");
    });
}

#[test]
fn in_place_reads_and_writes_never_race() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(2).expect("pipe");
        let producer = thread::spawn(move || {
            let mut next = 1u8;
            while next <= 3 {
                if writer.reserve().is_err() {
                    writer.wait_writable(None).expect("wait");
                    continue;
                }
                let (first, _) = writer.spare_slices();
                first[0] = next;
                writer.commit(1);
                next += 1;
            }
        });
        let mut got = Vec::new();
        loop {
            match reader.fill() {
                Ok(0) => break,
                Ok(_) => {
                    let (first, second) = reader.peek();
                    got.extend_from_slice(first);
                    got.extend_from_slice(second);
                    let n = first.len() + second.len();
                    reader.consume(n);
                }
                Err(err) => {
                    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
                    reader.wait_readable(None).expect("wait");
                }
            }
        }
        assert_eq!(got, [1, 2, 3]);
        producer.join().expect("producer");
    });
}

#[test]
fn closing_the_writer_wakes_a_waiting_reader_with_end_of_file() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(2).expect("pipe");
        let producer = thread::spawn(move || {
            assert_eq!(writer.write(&[9]).expect("write"), 1);
            writer.close();
        });
        assert_eq!(read_to_end(&mut reader, 1), [9]);
        producer.join().expect("producer");
    });
}

#[test]
fn dropping_the_reader_wakes_a_waiting_writer_with_broken_pipe() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(1).expect("pipe");
        let producer = thread::spawn(move || {
            // Needs the reader to free two slots; it frees one, then leaves.
            writer
                .write_all_blocking(&[1, 2, 3])
                .expect_err("the reader left")
        });
        let mut buf = [0; 1];
        assert_eq!(reader.read_blocking(&mut buf).expect("read"), 1);
        drop(reader);
        assert_eq!(
            producer.join().expect("producer").kind(),
            io::ErrorKind::BrokenPipe
        );
    });
}

#[test]
fn a_wakeup_is_only_sent_to_a_parked_reader() {
    model(|| {
        let (mut writer, mut reader) = crate::pipe(4).expect("pipe");
        let producer = thread::spawn(move || {
            writer.write(&[1]).expect("write");
            writer.write(&[2]).expect("write");
            writer
        });
        let mut got = 0;
        let mut buf = [0; 4];
        while got < 2 {
            match reader.read(&mut buf) {
                Ok(n) => got += n,
                Err(_) => {
                    reader.wait_readable(None).expect("wait");
                }
            }
        }
        let writer = producer.join().expect("producer");
        // Each eventfd write answered one parking of the reader; two writes to
        // a reader that never parked make no syscall at all.
        let stats = writer.stats();
        assert!(stats.data_wakeups <= stats.data_parks, "{stats:?}");
    });
}
