mod common;
mod engine;
mod facts;
mod resources_user;
mod transport;
