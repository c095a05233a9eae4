//! The forwarder's reading of DNS messages: whatever a resolver (or a job)
//! sends, reading it yields an answer or an error, never a panic, and what
//! it yields keeps its own promises: the chain starts at the question and
//! holds no name twice, every address is on it, an error reply to a query
//! reads back as that query's question.
#![no_main]

use geowall::dns::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = wire::question(data) {
        assert!(q.end <= data.len());
        if let Some(reply) = wire::error_reply(data, wire::rcode::REFUSED) {
            let back = wire::question(&reply).expect("an error reply has its question");
            assert_eq!((back.id, &back.name, back.qtype), (q.id, &q.name, q.qtype));
            let a = wire::answer(&reply).expect("an error reply reads as an answer");
            assert_eq!(a.rcode, wire::rcode::REFUSED);
            assert!(a.addresses.is_empty());
        }
    }
    if let Ok(a) = wire::answer(data) {
        assert_eq!(a.chain.first(), Some(&a.question.name));
        assert!(a.chain.len() <= wire::MAX_CHAIN + 1);
        let mut seen = std::collections::HashSet::new();
        assert!(a.chain.iter().all(|n| seen.insert(n)), "a name twice on the chain");
    }
});
