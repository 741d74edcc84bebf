package sqlstore

import "fieldsync/server/store"

// The SQLite store implements every job of the store boundary (store.Store
// embeds them all: Health, Admin, Sessions, Sync, Review, Export, Console,
// Evidence with Uploads, and OutboxImport).
var _ store.Store = (*Store)(nil)
