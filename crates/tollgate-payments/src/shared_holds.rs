//! Requests on one channel share one reservation in the store (a block),
//! held by this process; each request's part of it (a share) is taken and
//! given back in memory. A request that fits in the block's free part
//! writes nothing before its upstream call; its commit charges the block
//! and holds the charged part again (`ChannelBook::commit_keeping`), so a
//! busy channel costs one write per request instead of two. The block
//! stays in the store, owned by this instance's lease: other instances see
//! it in `reserved`, and a crashed process's block is released like any
//! reservation of an instance whose lease ran out.
//!
//! The block is released with its last share: the last share's commit is
//! the plain, releasing commit, so `reserved` is back to 0 once a channel
//! has no request in flight.

use std::collections::HashMap;
use std::sync::Mutex;

/// One block: a reservation in the store and what its shares use of it.
#[derive(Debug)]
struct Block {
    channel_id: String,
    /// What the store holds for it (as far as this process's writes say).
    size: u128,
    /// What live shares hold.
    in_use: u128,
    /// Live shares, counting those whose commit is under way.
    shares: usize,
}

#[derive(Debug, Default)]
struct Blocks {
    /// The block new shares of a channel come from.
    current: HashMap<String, i64>,
    /// Every block with a live share (current or not).
    blocks: HashMap<i64, Block>,
}

/// How a new share of a channel is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// From the block's free part: nothing to write.
    Shared { block: i64 },
    /// The share is counted in `block`, which must first grow by
    /// `shortfall` in the store ([`SharedHolds::grown`] after).
    Grow { block: i64, shortfall: u128 },
    /// The channel has no block: reserve one in the store and
    /// [`SharedHolds::created`] it.
    Create,
}

/// How a share's commit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The last share: commit and release the block (it is no longer
    /// handed out).
    Last,
    /// Others share the block: charge it and keep it.
    Keep,
}

/// Every block of this process.
#[derive(Debug, Default)]
pub(crate) struct SharedHolds(Mutex<Blocks>);

impl SharedHolds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a share of `amount` on the channel's block, if it has one.
    pub(crate) fn take(&self, channel_id: &str, amount: u128) -> Take {
        let mut held = self.lock();
        let Some(&id) = held.current.get(channel_id) else {
            return Take::Create;
        };
        let Some(block) = held.blocks.get_mut(&id) else {
            held.current.remove(channel_id);
            return Take::Create;
        };
        let free = block.size.saturating_sub(block.in_use);
        block.in_use += amount;
        block.shares += 1;
        if free >= amount {
            Take::Shared { block: id }
        } else {
            Take::Grow {
                block: id,
                shortfall: amount - free,
            }
        }
    }

    /// The store grew `block` by `extra`.
    pub(crate) fn grown(&self, block: i64, extra: u128) {
        if let Some(b) = self.lock().blocks.get_mut(&block) {
            b.size += extra;
        }
    }

    /// A block the store reserved, with its first share of `amount`. It
    /// becomes the channel's block unless another was made meanwhile (then
    /// it serves this share alone).
    pub(crate) fn created(&self, channel_id: &str, block: i64, amount: u128) {
        let mut held = self.lock();
        held.blocks.insert(
            block,
            Block {
                channel_id: channel_id.to_owned(),
                size: amount,
                in_use: amount,
                shares: 1,
            },
        );
        held.current.entry(channel_id.to_owned()).or_insert(block);
    }

    /// A share's commit begins. The last share takes its block out of
    /// service, so no new share can join a block being released.
    pub(crate) fn begin_commit(&self, block: i64) -> Commit {
        let mut held = self.lock();
        match held.blocks.get(&block) {
            Some(b) if b.shares > 1 => Commit::Keep,
            _ => {
                held.retire(block);
                held.blocks.remove(&block);
                Commit::Last
            }
        }
    }

    /// A kept commit charged `charged` and held `refilled` again. Returns
    /// the block when this was its last share (the caller releases it).
    /// A channel that no longer serves gets no new shares from it.
    pub(crate) fn end_commit(
        &self,
        block: i64,
        share: u128,
        charged: u128,
        refilled: u128,
        serving: bool,
    ) -> Option<i64> {
        let mut held = self.lock();
        if let Some(b) = held.blocks.get_mut(&block) {
            b.size = (b.size + refilled).saturating_sub(charged);
        }
        if !serving {
            held.retire(block);
        }
        held.give_back(block, share)
    }

    /// A share that was not committed (the request failed or went away).
    /// Returns the block when this was its last share.
    pub(crate) fn give_back(&self, block: i64, share: u128) -> Option<i64> {
        self.lock().give_back(block, share)
    }

    /// No new shares from `block` (the store no longer holds it, or its
    /// channel stopped serving).
    pub(crate) fn retire(&self, block: i64) {
        self.lock().retire(block);
    }

    /// No new shares on a channel (it is closing): its live shares keep
    /// their block until they end.
    pub(crate) fn retire_channel(&self, channel_id: &str) {
        self.lock().current.remove(channel_id);
    }

    /// (blocks, shares) held now, for tests.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let held = self.lock();
        (
            held.blocks.len(),
            held.blocks.values().map(|b| b.shares).sum(),
        )
    }
}

impl Blocks {
    fn retire(&mut self, block: i64) {
        if let Some(b) = self.blocks.get(&block)
            && self.current.get(&b.channel_id) == Some(&block)
        {
            self.current.remove(&b.channel_id);
        }
    }

    fn give_back(&mut self, block: i64, share: u128) -> Option<i64> {
        let b = self.blocks.get_mut(&block)?;
        b.in_use = b.in_use.saturating_sub(share);
        b.shares = b.shares.saturating_sub(1);
        if b.shares > 0 {
            return None;
        }
        self.retire(block);
        self.blocks.remove(&block);
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_come_from_the_free_part_and_the_last_one_releases() {
        let holds = SharedHolds::default();
        assert_eq!(holds.take("c", 10), Take::Create);
        holds.created("c", 1, 10);
        // The block is fully used: the next share grows it.
        assert_eq!(
            holds.take("c", 10),
            Take::Grow {
                block: 1,
                shortfall: 10
            }
        );
        holds.grown(1, 10);
        assert_eq!(holds.begin_commit(1), Commit::Keep);
        // Charged 4 and held again: the block keeps its 20.
        assert_eq!(holds.end_commit(1, 10, 4, 4, true), None);
        assert_eq!(holds.take("c", 10), Take::Shared { block: 1 });
        assert_eq!(holds.counts(), (1, 2));
        // Charged 4, nothing held again: 16 left, 10 in use.
        assert_eq!(holds.begin_commit(1), Commit::Keep);
        assert_eq!(holds.end_commit(1, 10, 4, 0, true), None);
        assert_eq!(
            holds.take("c", 7),
            Take::Grow {
                block: 1,
                shortfall: 1
            }
        );
        assert_eq!(holds.give_back(1, 7), None);
        // The last share's commit takes the block out of service.
        assert_eq!(holds.begin_commit(1), Commit::Last);
        assert_eq!(holds.counts(), (0, 0));
        assert_eq!(holds.take("c", 1), Take::Create);
    }

    #[test]
    fn a_kept_commit_that_ends_last_hands_the_block_back() {
        let holds = SharedHolds::default();
        holds.created("c", 1, 5);
        assert_eq!(
            holds.take("c", 5),
            Take::Grow {
                block: 1,
                shortfall: 5
            }
        );
        holds.grown(1, 5);
        // Both commits start while the other is live: both keep.
        assert_eq!(holds.begin_commit(1), Commit::Keep);
        assert_eq!(holds.begin_commit(1), Commit::Keep);
        assert_eq!(holds.end_commit(1, 5, 5, 5, true), None);
        assert_eq!(holds.end_commit(1, 5, 5, 5, true), Some(1));
        assert_eq!(holds.counts(), (0, 0));
        assert_eq!(holds.take("c", 1), Take::Create);
    }

    #[test]
    fn a_closing_channel_gets_no_new_shares_from_its_block() {
        let holds = SharedHolds::default();
        holds.created("c", 1, 5);
        assert_eq!(
            holds.take("c", 5),
            Take::Grow {
                block: 1,
                shortfall: 5
            }
        );
        holds.grown(1, 5);
        assert_eq!(holds.begin_commit(1), Commit::Keep);
        assert_eq!(holds.end_commit(1, 5, 5, 0, false), None);
        // The block still serves its live share, but no new one.
        assert_eq!(holds.take("c", 1), Take::Create);
        assert_eq!(holds.counts(), (1, 1));
        // A race lost: a second block serves its share alone.
        holds.created("c", 2, 1);
        holds.created("c", 3, 1);
        assert_eq!(holds.begin_commit(3), Commit::Last);
        assert_eq!(holds.give_back(1, 5), Some(1));
        assert_eq!(
            holds.take("c", 1),
            Take::Grow {
                block: 2,
                shortfall: 1
            }
        );
        holds.retire(2);
        assert_eq!(holds.take("c", 1), Take::Create);
    }
}
