/// `mod $name { embedded, moto }`: `$check` run on a [`backend::Backend`] of each kind, so a
/// failure names the check and the store. The calling module imports `Backend`.
macro_rules! on_both_backends {
    ($name:ident, |$b:ident| $check:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn embedded() {
                let $b = Backend::embedded();
                $check.await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn moto() {
                let $b = Backend::moto().await;
                $check.await;
            }
        }
    };
}

pub mod backend;
pub mod contract;
pub mod faults;
pub mod flows;
pub mod iam;
pub mod moto;
pub mod process;
pub mod queues;
pub mod runner;
pub mod template;
pub mod users;
