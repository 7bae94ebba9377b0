// Package webhook delivers a node's events to the HTTP endpoints an
// operator configured: document.changed (debounced per document),
// document.created, document.deleted and access.changed.
//
// Each delivery is a POST of a JSON body signed with HMAC-SHA256 over the
// timestamp and the body (Sign, Verify), with an idempotency key that
// stays the same across retries. Deliveries wait in a bounded queue: a
// full queue drops the new event and counts it. A single node keeps the
// queue in memory; a cluster keeps it in a Redis stream read by a
// consumer group, so each delivery is made by one node of the cluster,
// not by every node; a delivery whose node dies is taken over by another
// node once it has been idle for Config.ClaimAfter.
//
// Concurrency: a Dispatcher's methods are safe for concurrent use and
// never block on the network (Emit and Changed only enqueue, with a
// bounded context); its workers deliver in their own goroutines until
// Close.
package webhook
