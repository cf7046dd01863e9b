mod common;
mod facts;
mod transport;
