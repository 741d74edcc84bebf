// Package store is the boundary between fieldsync's consumers of storage
// (the HTTP API, the web console, exports, the outbox import and the tus
// upload handler) and the engines that implement it.
//
// It holds two things and nothing else:
//
//   - the domain types that cross the boundary: rows and filters of the
//     read models (VisitRow, HouseholdRow, ExportVisit, PlaceProgress, ...),
//     the device that pushes (PushDevice), the sync errors a push can
//     return (SequenceGapError, SequenceReusedError), and the records of
//     uploads and blobs;
//   - small interfaces grouped by job (Health, Admin, Sessions, Sync,
//     Review, Export, Console, Uploads, Evidence, OutboxImport) and Store,
//     which embeds them all.
//
// Each method in an interface is one that a consumer calls; the groups
// overlap where two jobs need the same method (Export needs Forms and
// Subtree, which Admin has too). A consumer names the groups it uses;
// an engine asserts that it implements Store. The SQLite engine is
// server/sqlstore; another engine (PostgreSQL) implements the same
// interfaces with the same types. No package here opens a database.
package store
