//! Test frontend for vhost-user-gpu backends (filled by issue 4).
