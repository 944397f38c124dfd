//! The host binary as an operator runs it: a child process on 127.0.0.1, stopped with
//! signals and restarted on the same data.

mod cli;
mod faults;
mod lifecycle;
mod load;
mod readme;
mod real_litellm;
mod redis;
mod replicas;
mod support;
