pub mod backend;
pub mod contract;
pub mod faults;
pub mod flows;
pub mod moto;
pub mod queues;
pub mod runner;
pub mod users;
