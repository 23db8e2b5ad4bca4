//! Fuzz-style properties: random, truncated and mangled bytes never panic the frame
//! decoder or the message decoder; they yield frames, `Ok(None)` or counted errors.

use proptest::prelude::*;
use qlab_net::frame::{FrameDecoder, FrameError, decode, encode};
use qlab_raft::Message;

fn feed(decoder: &mut FrameDecoder, bytes: &[u8], chunk: usize) -> (usize, usize) {
    let (mut frames, mut malformed) = (0, 0);
    for piece in bytes.chunks(chunk.max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    frames += 1;
                    if decode::<Message>(&payload).is_err() {
                        malformed += 1;
                    }
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { .. }) => return (frames, malformed),
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    (frames, malformed)
}

fn valid_stream(count: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..count as u64 {
        encode(&Message::Heartbeat { term: i, commit: i / 2, read_round: i }, &mut wire);
        encode(&Message::VoteResponse { term: i, granted: i % 2 == 0 }, &mut wire);
    }
    wire
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..64) {
        let mut decoder = FrameDecoder::new(1024);
        feed(&mut decoder, &bytes, chunk);
    }

    #[test]
    fn truncated_streams_yield_only_whole_frames(count in 1usize..20, cut in 0usize..400, chunk in 1usize..32) {
        let wire = valid_stream(count);
        let cut = cut.min(wire.len());
        let mut decoder = FrameDecoder::new(1024);
        let (frames, malformed) = feed(&mut decoder, &wire[..cut], chunk);
        prop_assert_eq!(malformed, 0, "a prefix of valid frames decodes cleanly");
        prop_assert!(frames <= 2 * count);
        if cut == wire.len() {
            prop_assert_eq!(frames, 2 * count);
        }
    }

    #[test]
    fn mangled_payloads_are_counted_not_fatal(count in 1usize..10, flips in proptest::collection::vec((0usize..300, any::<u8>()), 1..8)) {
        let mut wire = valid_stream(count);
        for (at, mask) in flips {
            let at = at % wire.len();
            wire[at] ^= mask;
        }
        let mut decoder = FrameDecoder::new(1024);
        feed(&mut decoder, &wire, 7);
    }
}
