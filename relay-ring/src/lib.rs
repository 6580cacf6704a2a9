//! Lock-free SPSC byte rings with eventfd wakeups between a VMM console device and the relay.
