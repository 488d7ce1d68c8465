package webui_test

import (
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/cairnbackup/cairn/webui"
)

// The appliance's HTTP listener serves the UI, which serves the REST API
// under /api/ behind its login.
func ExampleNew() {
	var api http.Handler = http.NotFoundHandler() // appliance.(*Appliance).Handler()
	store, err := webui.OpenFileStore(filepath.Join("/var/lib/cairn", "webui.json"))
	if err != nil {
		panic(err)
	}
	ui, err := webui.New(webui.Config{API: api, Store: store, Secure: false, Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: ui.Handler()}
	_ = srv // srv.ListenAndServe()
}
