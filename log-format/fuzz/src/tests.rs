//! The fuzz checks on stable: hand-made inputs with known outcomes, and a few
//! hundred pseudo-random ones from fixed seeds.

use std::collections::{BTreeMap, BTreeSet};

use log_format::events::{
    AccountId, CloseReason, EntryBody, Event, LogEntry, Membership, MessageId, PasswordHash,
    SCHEMA_VERSION, SessionId, TokenHash,
};
use log_format::format::{self, SegmentHeader};

use super::*;

/// splitmix64: a small, fixed generator so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Frames for records `first..first + count`, each with a small payload.
fn frames(first: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let payload = vec![b'a' + (i % 26) as u8; (i as usize * 7) % 19];
        format::encode_frame(&mut out, first.wrapping_add(i), 1 + i / 4, &payload);
    }
    out
}

/// A fuzz input with a harness-written header at `first` followed by `body`.
fn with_header(first: u64, body: &[u8]) -> Vec<u8> {
    let mut data = vec![MODE_HEADER | MODE_ANY_FIRST_INDEX];
    data.extend_from_slice(&first.to_le_bytes());
    data.extend_from_slice(body);
    data
}

/// A fuzz input that is the whole file as given.
fn raw(file: &[u8]) -> Vec<u8> {
    let mut data = vec![0];
    data.extend_from_slice(file);
    data
}

fn check(data: &[u8], expected: ScanOutcome) {
    assert_eq!(check_segment(data), expected, "input {data:02x?}");
}

fn corrupt(records: u64, kind: CorruptionKind) -> ScanOutcome {
    ScanOutcome::Corrupt { records, kind }
}

fn is_kind(outcome: &ScanOutcome, want: fn(&CorruptionKind) -> bool) -> bool {
    matches!(outcome, ScanOutcome::Corrupt { kind, .. } if want(kind))
}

#[test]
fn hand_made_segments() {
    let three = frames(0, 3);
    let second = frame_len(&three);
    let third_at = second + frame_len(&three[second..]);

    check(
        &[],
        corrupt(
            0,
            CorruptionKind::BadHeader("segment header is incomplete (0 of 48 bytes)".into()),
        ),
    );
    check(&with_header(0, &[]), ScanOutcome::Clean { records: 0 });
    check(&with_header(0, &three), ScanOutcome::Clean { records: 3 });
    check(
        &with_header(7, &frames(7, 40)),
        ScanOutcome::Clean { records: 40 },
    );
    // The last record cut short anywhere is a torn tail.
    for cut in third_at + 1..three.len() {
        check(
            &with_header(0, &three[..cut]),
            ScanOutcome::Torn { records: 2 },
        );
    }
    // A flipped payload byte in the last record is a torn tail; in the middle
    // record, with a valid record after it, it is corruption.
    let mut last_bad = three.clone();
    *last_bad.last_mut().unwrap() ^= 1;
    check(&with_header(0, &last_bad), ScanOutcome::Torn { records: 2 });
    let mut middle_bad = three.clone();
    middle_bad[third_at - 1] ^= 1;
    assert!(is_kind(
        &check_segment(&with_header(0, &middle_bad)),
        |k| matches!(k, CorruptionKind::BadChecksum { .. })
    ));
    // A valid record with the wrong index.
    let mut gap = frames(0, 2);
    gap.extend_from_slice(&frames(3, 1));
    check(
        &with_header(0, &gap),
        corrupt(
            2,
            CorruptionKind::NotContiguous {
                expected: 2,
                got: 3,
            },
        ),
    );
    // An impossible length with nothing after it is a torn tail.
    let mut huge = frames(0, 1);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 20]);
    check(&with_header(0, &huge), ScanOutcome::Torn { records: 1 });
    // A file whose header names another first index than its file name.
    let mut file = SegmentHeader::base(1, 5).encode().to_vec();
    file.extend_from_slice(&frames(5, 2));
    check(
        &raw(&file),
        corrupt(
            0,
            CorruptionKind::NameMismatch {
                name_index: 0,
                header_index: 5,
            },
        ),
    );
    // Sealing repairs CRCs but not indexes.
    let mut sealed = vec![MODE_HEADER | MODE_SEAL];
    sealed.extend_from_slice(&middle_bad);
    check(&sealed, ScanOutcome::Clean { records: 3 });
}

#[test]
fn no_record_follows_the_last_index() {
    // A base segment at u64::MAX: the record there leaves no next index, and
    // a record 0 after it must not pass as the next one.
    check_segment(&with_header(u64::MAX, &frames(u64::MAX, 1)));
    let mut wrapped = frames(u64::MAX, 1);
    wrapped.extend_from_slice(&frames(0, 2));
    check_segment(&with_header(u64::MAX, &wrapped));
}

/// A body for a header at `first`: valid frames with a few kinds of damage.
fn plausible_body(rng: &mut Rng, first: u64) -> Vec<u8> {
    let mut body = frames(first, rng.below(6) as u64);
    for _ in 0..rng.below(3) {
        match rng.below(5) {
            0 if !body.is_empty() => {
                let at = rng.below(body.len());
                body[at] ^= 1 << rng.below(8);
            }
            1 if !body.is_empty() => {
                let cut = rng.below(body.len());
                body.truncate(cut);
            }
            2 => {
                let n = rng.below(40);
                body.extend_from_slice(&rng.bytes(n));
            }
            3 => {
                // A record out of place: repeated, skipped ahead or behind.
                let index = first.wrapping_add(rng.below(8) as u64);
                body.extend_from_slice(&frames(index, 1));
            }
            _ => {
                let at = rng.below(body.len() + 1);
                let n = rng.below(8);
                let junk = rng.bytes(n);
                body.splice(at..at, junk);
            }
        }
    }
    body
}

#[test]
fn random_segments() {
    let mut rng = Rng(0x5e6_0001);
    let mut outcomes = Vec::new();
    for _ in 0..600 {
        let mode = rng.below(8) as u8;
        let data = if rng.below(4) == 0 {
            let mut data = vec![mode];
            let n = rng.below(120);
            data.extend_from_slice(&rng.bytes(n));
            data
        } else {
            let first = [0, 1, 31, 1 << 40, rng.next()][rng.below(5)];
            let body = plausible_body(&mut rng, first);
            if mode & MODE_HEADER == 0 {
                let mut file = SegmentHeader::base(2, 0).encode().to_vec();
                file.extend_from_slice(&plausible_body(&mut rng, 0));
                let mut data = vec![mode];
                data.extend_from_slice(&file);
                data
            } else if mode & MODE_ANY_FIRST_INDEX != 0 {
                let mut data = with_header(first, &body);
                data[0] = mode;
                data
            } else {
                let mut data = vec![mode];
                data.extend_from_slice(&plausible_body(&mut rng, 0));
                data
            }
        };
        outcomes.push(check_segment(&data));
    }
    // The sweep reaches every outcome the reader has.
    let reached = |what: &str, hit: &dyn Fn(&ScanOutcome) -> bool| {
        assert!(outcomes.iter().any(hit), "no input reached {what}");
    };
    reached(
        "a clean scan with records",
        &|o| matches!(o, ScanOutcome::Clean { records } if *records > 0),
    );
    reached(
        "a torn tail after records",
        &|o| matches!(o, ScanOutcome::Torn { records } if *records > 0),
    );
    reached("a bad header", &|o| {
        is_kind(o, |k| matches!(k, CorruptionKind::BadHeader(_)))
    });
    reached("a bad checksum", &|o| {
        is_kind(o, |k| matches!(k, CorruptionKind::BadChecksum { .. }))
    });
    reached("a bad length", &|o| {
        is_kind(o, |k| matches!(k, CorruptionKind::BadLength { .. }))
    });
    reached("a truncated record", &|o| {
        is_kind(o, |k| *k == CorruptionKind::Truncated)
    });
    reached("an index gap", &|o| {
        is_kind(o, |k| matches!(k, CorruptionKind::NotContiguous { .. }))
    });
}

fn sample_entries() -> Vec<LogEntry> {
    let entry = |body| LogEntry {
        leader_node: 3,
        body,
    };
    let event = |e| entry(EntryBody::Event(e));
    vec![
        entry(EntryBody::Blank),
        entry(EntryBody::Membership(Membership {
            configs: vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3, 4])],
            nodes: BTreeMap::from([(1, "127.0.0.1:7001".into()), (4, "[::1]:7004".into())]),
        })),
        event(Event::AccountCreated {
            username: "zoë".into(),
            password_hash: PasswordHash("$argon2id$v=19$x".into()),
            at_ms: 1_700_000_000_000,
        }),
        event(Event::AccountDeleted {
            account: AccountId(2),
            at_ms: 9,
        }),
        event(Event::SessionOpened {
            account: AccountId(2),
            token_hash: TokenHash([0xab; 32]),
            at_ms: u64::MAX,
        }),
        event(Event::SessionClosed {
            account: AccountId(2),
            session: SessionId(5),
            reason: CloseReason::Idle,
            at_ms: 10,
        }),
        event(Event::MessageSent {
            from: AccountId(2),
            to: AccountId(8),
            client_msg_id: "k-1".into(),
            body: "hi 👋".into(),
            at_ms: 11,
        }),
        event(Event::DeliveredUpTo {
            account: AccountId(8),
            up_to: MessageId(12),
            at_ms: 12,
        }),
        event(Event::ReadUpTo {
            account: AccountId(8),
            peer: AccountId(2),
            up_to: MessageId(12),
            at_ms: 13,
        }),
        event(Event::MessagesDeleted {
            account: AccountId(8),
            ids: vec![MessageId(12), MessageId(300)],
            at_ms: 14,
        }),
        entry(EntryBody::Events(vec![
            Event::DeliveredUpTo {
                account: AccountId(8),
                up_to: MessageId(12_001),
                at_ms: 15,
            },
            Event::AccountDeleted {
                account: AccountId(2),
                at_ms: 16,
            },
        ])),
    ]
}

#[test]
fn events_round_trip_under_damage() {
    let mut rng = Rng(0xe7e_0002);
    let (mut decoded, mut refused) = (0, 0);
    let mut count = |data: &[u8]| match check_events_decode(data) {
        Some(_) => decoded += 1,
        None => refused += 1,
    };
    for entry in sample_entries() {
        let bytes = events::encode(&entry);
        assert_eq!(check_events_decode(&bytes), Some(entry));
        for cut in 0..bytes.len() {
            count(&bytes[..cut]);
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1 << rng.below(8);
            count(&flipped);
            flipped[at] = rng.next() as u8;
            count(&flipped);
        }
    }
    for _ in 0..400 {
        let n = rng.below(64);
        let mut data = rng.bytes(n);
        if let Some(first) = data.first_mut() {
            *first = SCHEMA_VERSION;
        }
        count(&data);
    }
    assert!(
        decoded > 100 && refused > 100,
        "{decoded} decoded, {refused} refused"
    );
}

/// The length of the whole frame at the front of `buf`; the tests build
/// their frames valid.
fn frame_len(buf: &[u8]) -> usize {
    match format::read_frame(buf) {
        FrameRead::Frame(frame) => frame.len(),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn sealing_makes_every_whole_frame_valid() {
    let mut body = frames(0, 4);
    let mut at = 0;
    while at < body.len() {
        let len = frame_len(&body[at..]);
        body[at + 4] ^= 0xff;
        at += len;
    }
    assert!(matches!(
        format::read_frame(&body),
        FrameRead::BadChecksum { .. }
    ));
    seal_frames(&mut body);
    let mut at = 0;
    while at < body.len() {
        at += frame_len(&body[at..]);
    }
    assert_eq!(at, body.len());
    assert_eq!(body, frames(0, 4));
}
