// Service worker of the fieldsync field app. It keeps the app shell in a
// versioned cache so the app starts with no network. A new version
// installs in the background and then WAITS: it takes over only when a
// page tells it that no sync is running ({type: 'skip-waiting'}), so an
// update never interrupts a push or an upload. The server writes the
// version below (a hash of all app files).
'use strict';

const VERSION = '__FIELDSYNC_APP_VERSION__';
const CACHE = 'fieldsync-shell-' + VERSION;
const SCOPE = new URL('./', self.location).pathname; // "/app/"

// Every file of the shell. server/app's TestApp_ShellListComplete checks
// this list against the embedded files.
const SHELL = [
  './',
  'index.html',
  'app.css',
  'manifest.webmanifest',
  'icon.svg',
  'icon-192.png',
  'icon-512.png',
  'js/app.js',
  'js/batch.js',
  'js/db.js',
  'js/export.js',
  'js/formcheck.js',
  'js/forms.js',
  'js/hhfields.js',
  'js/household.js',
  'js/photo.js',
  'js/sync.js',
  'js/ui.js',
  'js/util.js',
  'js/visit.js',
  'vendor/tus.min.js',
];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // cache: 'reload' bypasses the HTTP cache: the shell is exactly this
    // version's files.
    await cache.addAll(SHELL.map((p) => new Request(p, { cache: 'reload' })));
  })());
  // No skipWaiting here: a page decides when (see the message handler).
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('fieldsync-shell-') && name !== CACHE) {
        await caches.delete(name);
      }
    }
    await self.clients.claim();
  })());
});

self.addEventListener('message', (event) => {
  const msg = event.data || {};
  if (msg.type === 'skip-waiting') {
    self.skipWaiting();
  } else if (msg.type === 'version' && event.ports && event.ports[0]) {
    event.ports[0].postMessage({ version: VERSION });
  }
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(SCOPE)) return;
  // The API is never cached here; only the shell under /app/.
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const key = req.mode === 'navigate' ? SCOPE + 'index.html' : url.pathname;
    const hit = await cache.match(key, { ignoreSearch: true });
    if (hit) return hit;
    try {
      return await fetch(req);
    } catch (e) {
      return new Response('离线，且此文件未缓存', { status: 503, headers: { 'Content-Type': 'text/plain; charset=utf-8' } });
    }
  })());
});
