// Package webui is the appliance's web interface: server-rendered pages
// (html/template, htmx, Pico CSS, all embedded) for the first-start admin
// setup, login, the dashboard, the add-agent wizard with its live pairing
// view, agent settings, and agent, setup and API tokens.
//
// The UI reads and acts only through the appliance's REST API handler,
// called in process, so the pages and the API never disagree. Its handler
// also serves that API under /api/, behind authentication: a session
// cookie (with the session's CSRF token in X-CSRF-Token for state-changing
// methods) or an "Authorization: Bearer" API token. The admin account,
// sessions and API tokens live in a Store; passwords are kept as argon2id
// hashes, session IDs and API tokens as SHA-256 hashes only.
// docs/webui.md describes the pages and how to mount the handler.
package webui
