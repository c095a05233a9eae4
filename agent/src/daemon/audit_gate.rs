//! `[audit] on_write_failure`: whether governed jobs' new connections are
//! refused while the audit log cannot be written. The log tells the gate
//! when it stops and starts being writable; a reload tells it the mode; the
//! gate keeps the programs' switch (`GW_CONFIG[AUDIT_DENY]`) on exactly
//! while both say so.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use crate::{config::OnWriteFailure, kernel::AuditSwitch};

pub(super) struct AuditGate {
    switch: AuditSwitch,
    deny: AtomicBool,
    writable: AtomicBool,
    /// The switch as last set (changes are made one at a time).
    on: Mutex<bool>,
}

impl AuditGate {
    pub(super) fn new(switch: AuditSwitch, mode: OnWriteFailure) -> Self {
        Self {
            switch,
            deny: AtomicBool::new(mode == OnWriteFailure::Deny),
            writable: AtomicBool::new(true),
            on: Mutex::new(false),
        }
    }

    /// The mode from the config (at start and on reload).
    pub(super) fn set_mode(&self, mode: OnWriteFailure) {
        self.deny
            .store(mode == OnWriteFailure::Deny, Ordering::Release);
        self.apply();
    }

    /// What the log says (called by it, under its lock).
    pub(super) fn set_writable(&self, writable: bool) {
        self.writable.store(writable, Ordering::Release);
        self.apply();
    }

    pub(super) fn mode(&self) -> OnWriteFailure {
        if self.deny.load(Ordering::Acquire) {
            OnWriteFailure::Deny
        } else {
            OnWriteFailure::Continue
        }
    }

    /// Whether governed jobs' new connections are being refused.
    pub(super) fn refusing(&self) -> bool {
        *self.on.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self) {
        let mut on = self.on.lock().unwrap_or_else(|p| p.into_inner());
        let want = self.deny.load(Ordering::Acquire) && !self.writable.load(Ordering::Acquire);
        // Set every time: a switch left on by an agent before this one
        // (pinned) is turned off at start.
        self.switch.set(want);
        if want != *on {
            if want {
                tracing::error!(
                    "the audit log cannot be written and [audit] on_write_failure = \"deny\": governed jobs' new connections are refused (reason audit) until it can"
                );
            } else {
                tracing::warn!(
                    "governed jobs' connections are judged again: the audit log can be written (or on_write_failure is \"continue\")"
                );
            }
            *on = want;
        }
    }
}
