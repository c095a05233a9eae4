//! The signal every task of the agent watches to know when to end.

/// Whether the agent is to stop, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Stop {
    /// Keep going.
    #[default]
    Running,
    /// End now; with `detach`, also end enforcement (every program
    /// detached, every pin removed).
    Requested { detach: bool },
}

impl Stop {
    pub(super) fn requested(self) -> bool {
        self != Stop::Running
    }
}
