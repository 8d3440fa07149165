//! A user's account data as a unit: read, replaced, patched with a day's changes, erased
//! (docs/data.md). Every write goes through [`UserStore::put_user`] or [`UserStore::delete_user`]
//! conditional on the version read, so two writers of one user are ordered: the one that loses
//! reads again and redoes its change on top of the winner's, and nothing is merged wrongly.
//!
//! Accounts a write takes away (an erased user's, a PATCH's `deleteAccounts`, a PUT that no longer
//! lists them) also leave the membership of every managed segment: after the data is written, or,
//! for an erasure, before it, so that a repeated DELETE can always finish an interrupted one.

pub mod body;
pub mod patch;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::domain::records::DEFAULT_SHARD_COUNT;
use crate::domain::{AccountId, MandatorId, UserData, UserId};
use crate::ports::{SegmentStore, StoreError, StoredUser, UserStore, UserWriteError};
use patch::{PatchError, UserPatch};

/// Attempts of a read-modify-write before a writer gives up with [`DataError::Contended`].
const WRITE_ATTEMPTS: u32 = 8;

/// What a data call can fail with, in terms the HTTP edge maps one to one.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no account data is stored for this user")]
    NotFound,
    /// The change does not apply to the stored data (a field named as a JSON pointer).
    #[error("{pointer} {message}")]
    Invalid { pointer: String, message: String },
    #[error("account {account} belongs to another user")]
    AccountHeld { account: AccountId, pointer: String },
    /// Other writes to the user kept winning; the client may retry.
    #[error("the user's data kept changing during the write; retry")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a write left stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WriteSummary {
    pub accounts: usize,
    pub transactions: usize,
}

impl WriteSummary {
    pub fn of(user: &UserData) -> Self {
        WriteSummary {
            accounts: user.accounts.len(),
            transactions: user.accounts.iter().map(|a| a.transactions.len()).sum(),
        }
    }
}

/// The ports the data calls need.
#[derive(Clone)]
pub struct AccountData {
    pub users: Arc<dyn UserStore>,
    pub segments: Arc<dyn SegmentStore>,
}

impl AccountData {
    /// What is stored for the user.
    pub async fn get(&self, mandator: &MandatorId, user: &UserId) -> Result<Option<StoredUser>, DataError> {
        match self.users.shard_count(mandator).await? {
            None => Ok(None),
            Some(shards) => Ok(self.users.get_user(mandator, shards, user).await?),
        }
    }

    /// Replaces everything stored for the user by `data` (validated, at least one account).
    pub async fn replace(&self, mandator: &MandatorId, data: &UserData) -> Result<WriteSummary, DataError> {
        let shards = self.shards_for_writing(mandator).await?;
        self.replace_in(mandator, shards, data).await.map_err(|e| write_error(e, data))
    }

    /// Replaces everything stored for the user by `data` (at least one account) on a mandator
    /// whose shard count is known: the one write of a whole user, for the data API and the
    /// importer alike. `VersionChanged` when other writes to the user kept winning.
    pub async fn replace_in(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        data: &UserData,
    ) -> Result<WriteSummary, UserWriteError> {
        for _ in 0..WRITE_ATTEMPTS {
            let stored = self.users.get_user(mandator, shard_count, &data.user_id).await?;
            let expected = stored.as_ref().map(|s| s.version);
            match self.users.put_user(mandator, shard_count, data, expected).await {
                Ok(_) => {
                    let removed = removed_accounts(stored.as_ref().map(|s| &s.data), Some(data));
                    self.leave_segments(mandator, &removed).await?;
                    return Ok(WriteSummary::of(data));
                }
                Err(UserWriteError::VersionChanged) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(UserWriteError::VersionChanged)
    }

    /// Applies a day's changes to the stored data. `NotFound` when nothing is stored; a patch
    /// that leaves the user without accounts erases the user.
    pub async fn patch(
        &self,
        mandator: &MandatorId,
        user: &UserId,
        patch: &UserPatch,
    ) -> Result<WriteSummary, DataError> {
        let Some(shards) = self.users.shard_count(mandator).await? else {
            return Err(DataError::NotFound);
        };
        for _ in 0..WRITE_ATTEMPTS {
            let Some(stored) = self.users.get_user(mandator, shards, user).await? else {
                return Err(DataError::NotFound);
            };
            let next = patch
                .apply(&stored.data)
                .map_err(|PatchError { pointer, message }| DataError::Invalid { pointer, message })?;
            // Patches add up over time: a user must stay readable by one GET.
            body::check_size(&next)
                .map_err(|e| DataError::Invalid { pointer: "/accounts".into(), message: e.message })?;
            let written = if next.accounts.is_empty() {
                self.users.delete_user(mandator, shards, user, stored.version).await
            } else {
                self.users.put_user(mandator, shards, &next, Some(stored.version)).await.map(|_| ())
            };
            match written {
                Ok(()) => {
                    self.leave_segments(mandator, &removed_accounts(Some(&stored.data), Some(&next))).await?;
                    return Ok(WriteSummary::of(&next));
                }
                Err(UserWriteError::VersionChanged) => continue,
                Err(e) => return Err(patch_error(e, patch)),
            }
        }
        Err(DataError::Contended)
    }

    /// Erases the user's account data and takes its accounts out of every segment. `NotFound`
    /// when nothing was stored.
    pub async fn erase(&self, mandator: &MandatorId, user: &UserId) -> Result<(), DataError> {
        let Some(shards) = self.users.shard_count(mandator).await? else {
            return Err(DataError::NotFound);
        };
        if self.erase_in(mandator, shards, user).await? { Ok(()) } else { Err(DataError::NotFound) }
    }

    /// Erases the user's account data and takes its accounts out of every segment, on a mandator
    /// whose shard count is known: the one erase of a user, for the data API and the importer
    /// alike. `false` when nothing was stored.
    pub async fn erase_in(&self, mandator: &MandatorId, shard_count: u32, user: &UserId) -> Result<bool, DataError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(stored) = self.users.get_user(mandator, shard_count, user).await? else {
                return Ok(false);
            };
            // Untag first: an erasure that stops after this leaves the data in place, and a retried
            // DELETE finds it and finishes. The other order could leave the accounts tagged with
            // nothing left to find them by.
            self.leave_segments(mandator, &removed_accounts(Some(&stored.data), None)).await?;
            match self.users.delete_user(mandator, shard_count, user, stored.version).await {
                Ok(()) => return Ok(true),
                Err(UserWriteError::VersionChanged) => continue,
                Err(UserWriteError::Store(e)) => return Err(e.into()),
                Err(UserWriteError::AccountHeld { .. } | UserWriteError::TooLarge(_)) => {
                    return Err(StoreError::Corrupt("erasing a user claimed an account".into()).into());
                }
            }
        }
        Err(DataError::Contended)
    }

    /// Takes the accounts out of every segment that has them as members.
    pub async fn leave_segments(&self, mandator: &MandatorId, accounts: &[AccountId]) -> Result<(), StoreError> {
        for account in accounts {
            for (segment, _) in self.segments.segments_of_account(mandator, account).await? {
                self.segments.change_members(mandator, segment, &[], std::slice::from_ref(account)).await?;
            }
        }
        Ok(())
    }

    /// The mandator's shard count, recorded with the default when this is its first data.
    async fn shards_for_writing(&self, mandator: &MandatorId) -> Result<u32, StoreError> {
        if let Some(shards) = self.users.shard_count(mandator).await? {
            return Ok(shards);
        }
        self.users.ensure_shard_count(mandator, DEFAULT_SHARD_COUNT).await?;
        Ok(self.users.shard_count(mandator).await?.unwrap_or(DEFAULT_SHARD_COUNT))
    }
}

/// The accounts `before` has and `after` has not.
pub fn removed_accounts(before: Option<&UserData>, after: Option<&UserData>) -> Vec<AccountId> {
    let kept: BTreeSet<&AccountId> =
        after.into_iter().flat_map(|u| u.accounts.iter().map(|a| &a.account.account_id)).collect();
    before
        .into_iter()
        .flat_map(|u| u.accounts.iter().map(|a| &a.account.account_id))
        .filter(|a| !kept.contains(a))
        .cloned()
        .collect()
}

fn write_error(e: UserWriteError, data: &UserData) -> DataError {
    match e {
        UserWriteError::AccountHeld { account, .. } => {
            let index = data.accounts.iter().position(|a| a.account.account_id == account).unwrap_or(0);
            DataError::AccountHeld { account, pointer: format!("/accounts/{index}/accountId") }
        }
        UserWriteError::TooLarge(e) => DataError::Invalid { pointer: "/accounts".into(), message: e.to_string() },
        UserWriteError::Store(e) => DataError::Store(e),
        UserWriteError::VersionChanged => DataError::Contended,
    }
}

fn patch_error(e: UserWriteError, patch: &UserPatch) -> DataError {
    match e {
        UserWriteError::AccountHeld { account, .. } => {
            let pointer = patch.pointer_of(&account);
            DataError::AccountHeld { account, pointer }
        }
        UserWriteError::TooLarge(e) => DataError::Invalid { pointer: "/accounts".into(), message: e.to_string() },
        UserWriteError::Store(e) => DataError::Store(e),
        UserWriteError::VersionChanged => DataError::Contended,
    }
}
