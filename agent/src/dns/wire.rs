//! DNS messages as the forwarder sees them, read only: the question of a
//! query, and what an answer says about the names on its CNAME chain.
//! Parsing is lazy and zero-copy (the `domain` crate): only the header,
//! the question and the answer section are read, so a malformed authority
//! or additional section (or an OPT or TSIG record) cannot make an answer
//! unreadable, and glue in the additional section is never learned.
//!
//! The forwarder passes every message through byte for byte; the only
//! messages it writes itself are the error replies of [`error_reply`].

use std::{collections::HashMap, net::IpAddr};

use domain::{
    base::{Message, ParsedName, Rtype, iana::Class},
    rdata::{A, Aaaa, Cname},
};
use thiserror::Error;

/// Bytes of a DNS header.
const HEADER: usize = 12;
/// CNAME hops followed from the question name at most (resolvers stop at
/// 8 to 16).
pub const MAX_CHAIN: usize = 16;

/// Why a message could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("shorter than a DNS header ({0} bytes)")]
    Short(usize),
    #[error("no question")]
    NoQuestion,
    #[error("malformed {section} section")]
    Malformed { section: &'static str },
}

/// Response codes the forwarder writes or records by name.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const REFUSED: u8 = 5;

    /// The mnemonic of a response code, for records.
    pub fn name(code: u8) -> String {
        match code {
            0 => "NOERROR".into(),
            1 => "FORMERR".into(),
            2 => "SERVFAIL".into(),
            3 => "NXDOMAIN".into(),
            4 => "NOTIMP".into(),
            5 => "REFUSED".into(),
            other => format!("RCODE{other}"),
        }
    }
}

/// The first question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The message ID.
    pub id: u16,
    /// The name asked, lower-case, without the final dot (`.` for the root).
    pub name: String,
    /// Its type (1 A, 28 AAAA, …).
    pub qtype: u16,
    /// The mnemonic of `qtype` (`A`, `AAAA`, `TYPE65534`).
    pub qtype_name: String,
    /// Bytes of the header and the question: what an error reply repeats.
    pub end: usize,
}

/// One address an answer gave for a name on its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub addr: IpAddr,
    /// The record's TTL, seconds.
    pub ttl: u32,
}

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub question: Question,
    pub rcode: u8,
    /// TC: the client should retry over TCP.
    pub truncated: bool,
    /// The question name, then each CNAME target followed from it, in order.
    pub chain: Vec<String>,
    /// The A and AAAA records whose owner is on the chain (class IN), in
    /// the order of the answer section. Records about other names (an
    /// answer that tries to teach more than it was asked) are ignored.
    pub addresses: Vec<Address>,
    /// Records of the answer section that were not on the chain.
    pub off_chain: usize,
}

/// The mnemonic of a record type.
pub fn type_name(rtype: u16) -> String {
    Rtype::from_int(rtype).to_string()
}

/// Reads the first question of a message (a query, or the question an
/// answer repeats).
pub fn question(bytes: &[u8]) -> Result<Question, WireError> {
    let msg = message(bytes)?;
    let mut section = msg.question();
    let first = match section.next() {
        Some(Ok(q)) => q,
        Some(Err(_)) => {
            return Err(WireError::Malformed {
                section: "question",
            });
        }
        None => return Err(WireError::NoQuestion),
    };
    let qtype = first.qtype().to_int();
    Ok(Question {
        id: msg.header().id(),
        name: canonical(&first.qname().to_string()),
        qtype,
        qtype_name: type_name(qtype),
        end: section.pos(),
    })
}

/// Reads an answer: its question, rcode, truncation, and the addresses on
/// the CNAME chain from the question name.
pub fn answer(bytes: &[u8]) -> Result<Answer, WireError> {
    let msg = message(bytes)?;
    let question = question(bytes)?;
    let header = msg.header();
    let records = msg
        .answer()
        .map_err(|_| WireError::Malformed { section: "answer" })?;
    // CNAMEs by owner, and addresses in order, from class IN records.
    let mut cnames: HashMap<String, String> = HashMap::new();
    let mut found: Vec<(String, Address)> = Vec::new();
    let mut total = 0usize;
    for record in records {
        let record = record.map_err(|_| WireError::Malformed { section: "answer" })?;
        total += 1;
        if record.class() != Class::IN {
            continue;
        }
        let owner = canonical(&record.owner().to_string());
        let ttl = record.ttl().as_secs();
        let bad = || WireError::Malformed { section: "answer" };
        match record.rtype() {
            Rtype::A => {
                if let Some(r) = record.to_record::<A>().map_err(|_| bad())? {
                    let addr = IpAddr::V4(r.data().addr());
                    found.push((owner, Address { addr, ttl }));
                }
            }
            Rtype::AAAA => {
                if let Some(r) = record.to_record::<Aaaa>().map_err(|_| bad())? {
                    let addr = IpAddr::V6(r.data().addr());
                    found.push((owner, Address { addr, ttl }));
                }
            }
            Rtype::CNAME => {
                if let Some(r) = record
                    .to_record::<Cname<ParsedName<_>>>()
                    .map_err(|_| bad())?
                {
                    // The first CNAME for an owner wins (a name has at most
                    // one; a second is not followed).
                    cnames
                        .entry(owner)
                        .or_insert_with(|| canonical(&r.data().cname().to_string()));
                }
            }
            _ => {}
        }
    }
    let chain = follow(&question.name, &cnames);
    let addresses: Vec<Address> = found
        .into_iter()
        .filter(|(owner, _)| chain.contains(owner))
        .map(|(_, address)| address)
        .collect();
    let on_chain = addresses.len() + chain.len() - 1;
    Ok(Answer {
        rcode: header.rcode().to_int(),
        truncated: header.tc(),
        off_chain: total.saturating_sub(on_chain),
        question,
        chain,
        addresses,
    })
}

/// The chain from `start` through `cnames`, at most [`MAX_CHAIN`] hops, a
/// loop cut where it closes.
fn follow(start: &str, cnames: &HashMap<String, String>) -> Vec<String> {
    let mut chain = vec![start.to_owned()];
    let mut at = start;
    while chain.len() <= MAX_CHAIN {
        let Some(next) = cnames.get(at) else {
            break;
        };
        if chain.contains(next) {
            break;
        }
        chain.push(next.clone());
        at = next;
    }
    chain
}

/// A reply to `query` with response code `rcode` and no records: the
/// query's header (ID, opcode, RD and CD kept; QR and RA set; AA, TC and AD
/// clear) and its question. `None` when the query has no readable question
/// (there is nothing to answer).
pub fn error_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let q = question(query).ok()?;
    let mut out = query.get(..q.end)?.to_vec();
    // Flags: QR(0x80) opcode(0x78) AA(0x04) TC(0x02) RD(0x01) | RA(0x80)
    // Z(0x40) AD(0x20) CD(0x10) RCODE(0x0f).
    out[2] = 0x80 | (out[2] & 0x79);
    out[3] = 0x80 | (out[3] & 0x10) | (rcode & 0x0f);
    // One question, no records.
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    // A question whose name points into the header (a compression pointer
    // below offset 12) reads differently once the header is rewritten:
    // such a query gets no reply rather than a malformed one.
    let back = question(&out).ok()?;
    (back.id == q.id && back.name == q.name && back.qtype == q.qtype).then_some(out)
}

fn message(bytes: &[u8]) -> Result<&Message<[u8]>, WireError> {
    if bytes.len() < HEADER {
        return Err(WireError::Short(bytes.len()));
    }
    Message::from_slice(bytes).map_err(|_| WireError::Short(bytes.len()))
}

/// A name as presented by `domain`, made canonical: lower-case, without
/// the final dot (the root stays `.`).
pub fn canonical(name: &str) -> String {
    if name == "." {
        return name.to_owned();
    }
    let lower = name.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a name as labels.
    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            h.extend_from_slice(&c.to_be_bytes());
        }
        h
    }

    fn rr(owner: &[u8], rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn a_question_pointing_into_the_header_gets_no_reply() {
        // Found by the fuzzer: the name is a pointer to offset 0.
        let mut q = vec![
            18, 129, 114, 4, 116, 101, 115, 116, 0, 0, 1, 0, 1, 48, 192, 0, 0, 0,
        ];
        q.extend_from_slice(&[0; 16]);
        if question(&q).is_ok() {
            assert_eq!(error_reply(&q, rcode::REFUSED), None);
        }
    }

    fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
        let mut m = header(id, 0x0100, [1, 0, 0, 0]);
        m.extend(name(qname));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    /// api.partner.test CNAME edge.cdn.test; edge.cdn.test A 127.20.0.5;
    /// other.test A 10.0.0.1 (off the chain); glue in additional.
    fn chained() -> Vec<u8> {
        let mut m = header(0x1234, 0x8180, [1, 3, 0, 1]);
        m.extend(name("Api.Partner.test"));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend(rr(
            &name("api.partner.test"),
            5,
            300,
            &name("edge.cdn.test"),
        ));
        m.extend(rr(&name("EDGE.cdn.test"), 1, 60, &[127, 20, 0, 5]));
        m.extend(rr(&name("other.test"), 1, 60, &[10, 0, 0, 1]));
        m.extend(rr(&name("ns.cdn.test"), 1, 60, &[192, 0, 2, 53]));
        m
    }

    #[test]
    fn reads_the_question_of_a_query() {
        let q = question(&query(7, "Example.TEST", 28)).unwrap();
        assert_eq!(q.id, 7);
        assert_eq!(q.name, "example.test");
        assert_eq!((q.qtype, q.qtype_name.as_str()), (28, "AAAA"));
        assert_eq!(q.end, 12 + 14 + 4);
    }

    #[test]
    fn follows_the_chain_and_ignores_what_is_off_it() {
        let a = answer(&chained()).unwrap();
        assert_eq!(a.question.name, "api.partner.test");
        assert_eq!(a.chain, ["api.partner.test", "edge.cdn.test"]);
        assert_eq!(
            a.addresses,
            [Address {
                addr: "127.20.0.5".parse().unwrap(),
                ttl: 60
            }]
        );
        assert_eq!(a.off_chain, 1);
        assert_eq!(a.rcode, rcode::NOERROR);
        assert!(!a.truncated);
    }

    #[test]
    fn a_cname_loop_ends_where_it_closes() {
        let mut m = header(1, 0x8180, [1, 3, 0, 0]);
        m.extend(name("a.test"));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend(rr(&name("a.test"), 5, 10, &name("b.test")));
        m.extend(rr(&name("b.test"), 5, 10, &name("a.test")));
        m.extend(rr(&name("b.test"), 1, 10, &[127, 0, 0, 9]));
        let a = answer(&m).unwrap();
        assert_eq!(a.chain, ["a.test", "b.test"]);
        assert_eq!(a.addresses.len(), 1);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert_eq!(answer(&[0; 5]), Err(WireError::Short(5)));
        // A compression pointer to itself in the answer.
        let mut m = header(1, 0x8180, [1, 1, 0, 0]);
        m.extend(name("a.test"));
        m.extend_from_slice(&[0, 1, 0, 1]);
        let at = m.len() as u16;
        m.extend_from_slice(&(0xc000 | at).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 10, 0, 4, 127, 0, 0, 1]);
        assert!(answer(&m).is_err());
        // Counts that promise more than there is.
        let mut m = chained();
        m[7] = 9;
        assert!(answer(&m).is_err());
        // Truncated in the middle of a record.
        let m = chained();
        assert!(answer(&m[..m.len() - 30]).is_err());
        // A pointer past the end.
        let mut m = header(1, 0x8180, [1, 0, 0, 0]);
        m.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
        assert!(question(&m).is_err());
        // Every prefix of a good answer: an answer or an error.
        let good = chained();
        for n in 0..good.len() {
            let _ = answer(&good[..n]);
            let _ = question(&good[..n]);
        }
    }

    #[test]
    fn error_replies_keep_the_id_and_question() {
        let q = query(0xbeef, "denied.test", 1);
        let r = error_reply(&q, rcode::NXDOMAIN).unwrap();
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[2] & 0x01, 0x01, "RD copied");
        assert_eq!(r[3] & 0x0f, rcode::NXDOMAIN);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        let a = answer(&r).unwrap();
        assert_eq!(a.question.name, "denied.test");
        assert_eq!(a.rcode, rcode::NXDOMAIN);
        assert!(a.addresses.is_empty());
        assert!(error_reply(&[1, 2, 3], rcode::SERVFAIL).is_none());
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical("WWW.Example.COM."), "www.example.com");
        assert_eq!(canonical("."), ".");
        assert_eq!(canonical("a.b"), "a.b");
    }
}
