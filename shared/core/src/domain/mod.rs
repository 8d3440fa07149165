//! Typed domain values: ids, money, months, the account data model and its import records, the
//! segments of the management API, and the callback secret (docs/semantics.md, docs/data.md). Pure: no I/O, no
//! transport or SDK types.

pub mod assembly;
mod callback;
pub mod date;
pub mod events;
mod ids;
mod model;
mod money;
mod month;
pub mod records;
pub mod refresh;
pub mod rule;
pub mod segment;
mod types;

pub use callback::{CallbackSecret, PendingCallback, random_key};
pub use ids::{AccountId, IdError, JobId, MandatorId, SegmentId, TransactionId, UserId};
pub use model::{Account, AccountHistory, Transaction, UserData};
pub use money::{Currency, Money, MoneyError};
pub use month::Month;
pub use types::{AccountType, SegmentType, UnknownAccountType, UnknownSegmentType};
