//! Finding the hub and talking to it from client commands.
