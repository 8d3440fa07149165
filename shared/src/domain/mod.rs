//! Typed domain values and the account data model (DESIGN §4, §5).

pub mod date;
mod ids;
mod model;
mod money;
mod month;
mod types;

pub use ids::{AccountId, IdError, JobId, MandatorId, TransactionId, UserId};
pub use model::{Account, AccountHistory, Transaction, UserData};
pub use money::{Currency, Money, MoneyError};
pub use month::Month;
pub use types::{AccountType, SegmentType, UnknownAccountType, UnknownSegmentType};
