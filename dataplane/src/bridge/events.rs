//! What happened in a bridge, for `vswitchctl monitor` (as `bridge monitor
//! fdb` and `ovsdb-client monitor` report it): stations learned, moved,
//! aged and flushed, ports up and down.
//!
//! The log is off unless a monitor is listening; when on, the forwarding
//! path pays one push for a new or moved station (never for a refresh), and
//! the log is bounded: events beyond [`EVENT_LOG_MAX`] between two drains are
//! counted as lost, never stored.

use super::PortId;
use crate::MacAddr;

/// Most events kept between two drains (a drain runs every 100 ms).
pub const EVENT_LOG_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbChange {
    Learned,
    /// From the port given.
    Moved(PortId),
    Aged,
    /// Removed otherwise: flushed, deleted, its port removed or down.
    Flushed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeEvent {
    Fdb {
        change: FdbChange,
        vlan: u16,
        mac: MacAddr,
        port: PortId,
        /// The tunnel remote's index, 0 for none.
        peer: u16,
    },
    Port {
        port: PortId,
        up: bool,
    },
}

#[derive(Debug, Default)]
pub struct EventLog {
    on: bool,
    buf: Vec<BridgeEvent>,
    lost: u64,
}

impl EventLog {
    /// Starts or stops recording (stopping forgets what was recorded).
    pub fn set_on(&mut self, on: bool) {
        if on && !self.on {
            self.buf.reserve(EVENT_LOG_MAX);
        }
        if !on {
            self.buf = Vec::new();
            self.lost = 0;
        }
        self.on = on;
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    #[inline]
    pub fn push(&mut self, e: BridgeEvent) {
        if !self.on {
            return;
        }
        if self.buf.len() < EVENT_LOG_MAX {
            self.buf.push(e);
        } else {
            self.lost += 1;
        }
    }

    /// Takes the recorded events and the count of those lost since the last
    /// drain.
    pub fn drain(&mut self) -> (std::vec::Drain<'_, BridgeEvent>, u64) {
        let lost = std::mem::take(&mut self.lost);
        (self.buf.drain(..), lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u32) -> BridgeEvent {
        BridgeEvent::Port { port: i, up: true }
    }

    #[test]
    fn off_records_nothing_and_on_is_bounded() {
        let mut l = EventLog::default();
        l.push(ev(1));
        assert_eq!(l.drain().0.count(), 0);
        l.set_on(true);
        for i in 0..EVENT_LOG_MAX as u32 + 10 {
            l.push(ev(i));
        }
        let (d, lost) = l.drain();
        assert_eq!((d.count(), lost), (EVENT_LOG_MAX, 10));
        let (d, lost) = l.drain();
        assert_eq!((d.count(), lost), (0, 0));
        l.push(ev(7));
        l.set_on(false);
        assert_eq!(l.drain().0.count(), 0);
    }
}
