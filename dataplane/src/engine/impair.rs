//! Egress impairment for labs (`set-port --delay/--jitter/--loss/--rate/
//! --limit`), as `tc netem` and vde's wirefilter do; this kernel has no
//! netem. Frames a worker would send on an impaired port go into the port's
//! queue instead: some are lost (`impair_loss`), the rest get a release time
//! (delay, plus uniform jitter, after the previous frame has had its turn on
//! a link of the given rate); a full queue drops (`impair_queue_full`).
//! Worker 0 releases what is due every loop turn (it wakes at least every
//! millisecond while an impaired port exists). Frames keep their order.
//! Pure and time-injected; the queue holds copies (wire bytes with their
//! virtio header), bounded by `--limit` frames.

use crate::bridge::PortId;
use crate::config::PortConfig;
use crate::port::AnyPort;
use crate::stats::DropReason;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Frames queued per port unless `--limit` says otherwise (netem's default).
pub const DEFAULT_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpairCfg {
    pub delay_ns: u64,
    pub jitter_ns: u64,
    /// Loss probability in parts per million.
    pub loss_ppm: u32,
    pub rate_bps: u64,
    pub limit: usize,
}

impl ImpairCfg {
    /// The port's impairment, None if it has none.
    pub fn of(c: &PortConfig) -> Option<ImpairCfg> {
        let cfg = ImpairCfg {
            delay_ns: u64::from(c.delay_ms.unwrap_or(0)) * 1_000_000,
            jitter_ns: u64::from(c.jitter_ms.unwrap_or(0)) * 1_000_000,
            loss_ppm: c.loss_ppm.unwrap_or(0),
            rate_bps: c.rate_bps.unwrap_or(0),
            limit: c.limit.unwrap_or(DEFAULT_LIMIT) as usize,
        };
        (cfg.delay_ns > 0 || cfg.jitter_ns > 0 || cfg.loss_ppm > 0 || cfg.rate_bps > 0)
            .then_some(cfg)
    }
}

/// One queued frame: when it goes, to which tunnel remote, the bytes
/// (virtio header, then the frame as it leaves).
pub struct Queued {
    pub release_ns: u64,
    pub peer: u16,
    pub bytes: Vec<u8>,
}

pub struct ImpairQ {
    pub cfg: ImpairCfg,
    queue: VecDeque<Queued>,
    /// When the modelled link is free again (rate).
    link_free_ns: u64,
    /// Release time of the last frame queued (order is kept).
    last_release_ns: u64,
    rng: u64,
}

impl ImpairQ {
    pub fn new(cfg: ImpairCfg, seed: u64) -> ImpairQ {
        ImpairQ {
            cfg,
            queue: VecDeque::new(),
            link_free_ns: 0,
            last_release_ns: 0,
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: plenty for loss and jitter draws.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Takes a frame (`bytes` long on the wire, plus its header) at `now`.
    pub fn admit(
        &mut self,
        now: u64,
        peer: u16,
        bytes: Vec<u8>,
        wire_len: usize,
    ) -> Result<(), DropReason> {
        if self.cfg.loss_ppm > 0 && (self.next_rand() % 1_000_000) < u64::from(self.cfg.loss_ppm) {
            return Err(DropReason::ImpairLoss);
        }
        if self.queue.len() >= self.cfg.limit {
            return Err(DropReason::ImpairQueueFull);
        }
        let mut t = now;
        if let Some(tx) = (wire_len as u64 * 8)
            .saturating_mul(1_000_000_000)
            .checked_div(self.cfg.rate_bps)
        {
            let start = self.link_free_ns.max(now);
            self.link_free_ns = start.saturating_add(tx);
            t = self.link_free_ns;
        }
        t = t.saturating_add(self.cfg.delay_ns);
        if self.cfg.jitter_ns > 0 {
            let j = self.next_rand() % (2 * self.cfg.jitter_ns + 1);
            t = (t + j).saturating_sub(self.cfg.jitter_ns);
        }
        let release_ns = t.max(self.last_release_ns);
        self.last_release_ns = release_ns;
        self.queue.push_back(Queued {
            release_ns,
            peer,
            bytes,
        });
        Ok(())
    }

    /// Moves the frames due at `now` (at most `max`) to `out`.
    pub fn due(&mut self, now: u64, max: usize, out: &mut Vec<Queued>) {
        while out.len() < max && self.queue.front().is_some_and(|q| q.release_ns <= now) {
            if let Some(q) = self.queue.pop_front() {
                out.push(q);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// An impaired port, as the workers see it.
pub struct Impaired {
    pub pid: PortId,
    pub io: Arc<AnyPort>,
    pub q: Arc<Mutex<ImpairQ>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(delay_ms: u64, jitter_ms: u64, loss_pct: u32, rate_bps: u64, limit: usize) -> ImpairCfg {
        ImpairCfg {
            delay_ns: delay_ms * 1_000_000,
            jitter_ns: jitter_ms * 1_000_000,
            loss_ppm: loss_pct * 10_000,
            rate_bps,
            limit,
        }
    }

    #[test]
    fn delay_holds_frames_and_keeps_order() {
        let mut q = ImpairQ::new(cfg(20, 0, 0, 0, 10), 1);
        q.admit(0, 0, vec![1], 60).unwrap();
        q.admit(1_000_000, 0, vec![2], 60).unwrap();
        let mut out = Vec::new();
        q.due(19_999_999, 10, &mut out);
        assert!(out.is_empty());
        q.due(20_000_000, 10, &mut out);
        assert_eq!(out.len(), 1);
        q.due(21_000_000, 10, &mut out);
        assert_eq!(
            out.iter().map(|x| x.bytes[0]).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn loss_rate_and_limit() {
        let mut q = ImpairQ::new(cfg(0, 0, 10, 0, 100_000), 7);
        let lost = (0..100_000)
            .filter(|_| q.admit(0, 0, Vec::new(), 60) == Err(DropReason::ImpairLoss))
            .count();
        assert!(
            (9_000..11_000).contains(&lost),
            "{lost} of 100000 lost at 10 %"
        );
        // 10 Mbit/s: 1250-byte frames leave 1 ms apart.
        let mut q = ImpairQ::new(cfg(0, 0, 0, 10_000_000, 3), 7);
        for _ in 0..3 {
            q.admit(0, 0, Vec::new(), 1250).unwrap();
        }
        assert_eq!(
            q.admit(0, 0, Vec::new(), 1250),
            Err(DropReason::ImpairQueueFull)
        );
        let mut out = Vec::new();
        q.due(2_000_000, 10, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn jitter_stays_within_bounds_and_order() {
        let mut q = ImpairQ::new(cfg(20, 5, 0, 0, 1000), 3);
        for i in 0..500u64 {
            q.admit(i * 1_000_000, 0, Vec::new(), 60).unwrap();
        }
        let mut out = Vec::new();
        q.due(u64::MAX, 1000, &mut out);
        let mut last = 0;
        for (i, x) in out.iter().enumerate() {
            let base = i as u64 * 1_000_000 + 20_000_000;
            assert!(x.release_ns >= last, "reordered");
            assert!(
                x.release_ns + 5_000_000 >= base && x.release_ns <= base + 5_000_000 + 5_000_000
            );
            last = x.release_ns;
        }
    }
}
