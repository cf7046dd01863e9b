mod common;
mod engine;
mod facts;
mod resources_file;
mod resources_system;
mod resources_user;
mod transport;
