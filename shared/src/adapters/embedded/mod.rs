//! The embedded store (redb) and the in-process queue.
