#![allow(dead_code)]

pub mod contract;
pub mod flows;
pub mod moto;
pub mod queues;
