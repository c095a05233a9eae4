//! The grants in force, as both of their writers see them: the approvals
//! decide grants and end them; the DNS forwarder opens, for a name grant,
//! each address the jobs it covers resolve from the name — written into
//! the kernel before the answer reaches the job, so resolve-then-connect
//! never races the grant. Every write of the grant tries happens here,
//! under one lock, from one copy of the live grants; the addresses opened
//! meanwhile go back into the approvals' store (and its file) on its next
//! turn.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Mutex,
};

use crate::{
    approvals::Approval,
    kernel::{GrantWriter, KernelError},
    regions::Prefix,
    tables::grants::entries,
    vocab::clock,
};

/// What a name grant opened for one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Opened {
    pub id: u32,
    pub to: String,
    pub addresses: Vec<IpAddr>,
    /// The grant holds [`crate::approvals::MAX_NAME_GRANT_ADDRESSES`]
    /// already: more addresses were not opened.
    pub full: bool,
}

#[derive(Debug, Default)]
struct Book {
    /// The live grants (approved), as last synced, with the addresses
    /// their names opened since.
    live: Vec<Approval>,
    /// Addresses opened since the store last took them.
    dirty: bool,
}

/// The live grants and the grant tries.
#[derive(Debug)]
pub(super) struct GrantBook {
    book: Mutex<Book>,
    writer: GrantWriter,
}

impl GrantBook {
    pub(super) fn new(writer: GrantWriter) -> Self {
        Self {
            book: Mutex::new(Book::default()),
            writer,
        }
    }

    /// Makes the grant tries hold exactly the entries of `live` (the
    /// store's approved requests): addresses their names opened since the
    /// last turn are added to them first. Answers how many entries there
    /// are.
    pub(super) fn sync<'a>(
        &self,
        live: impl Iterator<Item = &'a mut Approval>,
    ) -> Result<usize, KernelError> {
        let mut book = self.book.lock().expect("grant book lock");
        let opened: BTreeMap<u32, BTreeSet<IpAddr>> = book
            .live
            .drain(..)
            .filter(|g| !g.resolved.is_empty())
            .map(|g| (g.id, g.resolved))
            .collect();
        for g in live {
            if g.to.name().is_some()
                && let Some(addrs) = opened.get(&g.id)
            {
                g.resolved.extend(addrs.iter().copied());
            }
            book.live.push(g.clone());
        }
        book.dirty = false;
        let wanted = entries(book.live.iter(), clock::unix_ms(), clock::boot_ns());
        for (key, set) in &wanted {
            self.writer.write_entry(key, set)?;
        }
        for key in self.writer.entries()? {
            if !wanted.contains_key(&key) {
                self.writer.delete_entry(&key)?;
            }
        }
        self.writer.set_count(wanted.len());
        Ok(wanted.len())
    }

    /// A job of bound cgroup `scope` under policy slot `slot` resolved
    /// `addresses` through `chain` (the question, then the CNAME chain):
    /// each live name grant that covers the job and matches a name of the
    /// chain opens them. Answers what was opened.
    pub(super) fn resolved(
        &self,
        scope: u64,
        slot: u32,
        chain: &[String],
        addresses: &[IpAddr],
    ) -> Result<Vec<Opened>, KernelError> {
        let mut book = self.book.lock().expect("grant book lock");
        if !book.live.iter().any(|g| g.to.name().is_some()) {
            return Ok(Vec::new());
        }
        let mut opened = Vec::new();
        for g in book.live.iter_mut() {
            let (taken, full) = g.take_resolved(scope, slot, chain, addresses);
            if !taken.is_empty() || full {
                opened.push(Opened {
                    id: g.id,
                    to: g.to.to_string(),
                    addresses: taken,
                    full,
                });
            }
        }
        if opened.iter().all(|o| o.addresses.is_empty()) {
            return Ok(opened);
        }
        book.dirty = true;
        let wanted = entries(book.live.iter(), clock::unix_ms(), clock::boot_ns());
        // Only the entries of the new addresses change (in every scope a
        // grant that opened them has).
        let scopes: BTreeSet<u64> = book
            .live
            .iter()
            .filter(|g| {
                opened
                    .iter()
                    .any(|o| o.id == g.id && !o.addresses.is_empty())
            })
            .map(Approval::scope)
            .collect();
        for o in &opened {
            for a in &o.addresses {
                for scope in &scopes {
                    if let Some(set) = wanted.get(&(*scope, Prefix::host(*a))) {
                        self.writer.write_entry(&(*scope, Prefix::host(*a)), set)?;
                    }
                }
            }
        }
        self.writer.set_count(wanted.len());
        Ok(opened)
    }

    /// Whether names opened addresses since the store last took them.
    pub(super) fn dirty(&self) -> bool {
        self.book.lock().expect("grant book lock").dirty
    }
}
