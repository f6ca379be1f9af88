mod harness;

mod detect;
mod egress;
mod escape;
mod filesystem;
mod lifecycle;
mod overlay;
mod persistence;
mod terminal;
