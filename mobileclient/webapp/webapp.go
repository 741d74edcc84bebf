// Package webapp holds the field app: an offline progressive web app in
// Simplified Chinese that grid workers install on a tablet or phone. It is
// plain ES modules, a service worker, a manifest and vendored third-party
// files (see vendor/README.md), embedded here with go:embed and served by
// the server at /app/ (server/app mounts it). There is no build step and no
// Go logic beyond giving access to the files.
//
// The service worker (sw.js) carries the placeholder __FIELDSYNC_APP_VERSION__,
// which the server replaces with a hash of all files, so that deploying a
// server with changed app files installs a new version on every device.
package webapp

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.css sw.js manifest.webmanifest icon.svg icon-192.png icon-512.png js vendor
var files embed.FS

// VersionPlaceholder is replaced in sw.js by the version of the files.
const VersionPlaceholder = "__FIELDSYNC_APP_VERSION__"

// FS returns the app's files, rooted at the app's folder (index.html at
// the top).
func FS() fs.FS { return files }
