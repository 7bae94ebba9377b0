// Package redisbroker is the hub.Broker of a cluster of Plait nodes, on
// Redis (github.com/redis/go-redis/v9): one Redis server or a Redis Cluster.
//
// Every document has a channel, a log and a position, all named with the
// document id as hash tag ("plait:{<id>}:ch", ":log", ":pos") so that they
// live in one cluster slot:
//   - Publishing changes is one Lua script: it bumps the document's offset,
//     XADDs the publication to a stream capped at Options.HistorySize
//     entries (entry id "<offset>-0"), and publishes it with its offset and
//     epoch (centrifuge's design). A node that sees a gap in the offsets,
//     another epoch, or a re-made subscription reads the missing
//     publications from the stream (History) or, if they are gone, from the
//     store.
//   - The epoch is created at random by the first script that finds the
//     position missing: a Redis that lost its data (restarted empty, key
//     expired after Options.HistoryTTL) shows as a new epoch.
//   - Ephemeral messages are published without a log: at most once.
//   - Sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7) when the server has
//     it, so a Redis Cluster spreads pub/sub over its masters; PUBLISH and
//     SUBSCRIBE otherwise (one server only).
//
// Concurrency: all methods are safe for concurrent use. Each Redis server
// the node subscribes on has one connection and one goroutine that reads
// it and calls the handler (which must not block). The goroutine pings a
// connection that has been silent for Options.ProbeInterval; an error or an
// unanswered ping re-makes the connection, subscribes every channel again
// (one command each) and reports each confirmed re-subscription through
// BrokerHandler.HandleResubscribed, so the document catches up.
//
// A subscription is counted active only when the server has confirmed it;
// Subscribe reads the stream position after that, so nothing published
// after the position can pass unseen.
package redisbroker
