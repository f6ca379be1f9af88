mod harness;

mod audit;
mod detect;
mod egress;
mod escape;
mod filesystem;
mod lifecycle;
mod overlay;
mod persistence;
mod terminal;
