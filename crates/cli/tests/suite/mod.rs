mod harness;

mod escape;
mod filesystem;
mod lifecycle;
mod overlay;
mod terminal;
