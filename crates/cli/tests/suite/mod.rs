mod harness;

mod audit;
mod detect;
mod detection;
mod egress;
mod escape;
mod filesystem;
mod governance;
mod inspect;
mod lifecycle;
mod overlay;
mod persistence;
mod response;
mod secret;
mod terminal;
