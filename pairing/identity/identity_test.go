package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "agent") // does not exist yet
	first, err := LoadOrCreate(dir, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFile)
	if runtime.GOOS != "windows" {
		checkMode(t, path, 0o600)
		checkMode(t, dir, 0o700|os.ModeDir)
	}
	before := readFile(t, path)
	if !bytes.HasPrefix(before, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("key file does not start with a PKCS #8 PEM block:\n%s", before)
	}

	second, err := LoadOrCreate(dir, "agent-1b")
	if err != nil {
		t.Fatal(err)
	}
	if first.Fingerprint() != second.Fingerprint() {
		t.Errorf("fingerprint after reload = %s, want %s", second.Fingerprint(), first.Fingerprint())
	}
	if !bytes.Equal(readFile(t, path), before) {
		t.Error("loading the key rewrote the key file")
	}
	if entries := dirNames(t, dir); !slices.Equal(entries, []string{KeyFile}) {
		t.Errorf("state directory holds %q, want only %s", entries, KeyFile)
	}

	// Stricter modes are fine.
	if runtime.GOOS != "windows" {
		for _, mode := range []os.FileMode{0o400, 0o700} {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if id, err := LoadOrCreate(dir, "x"); err != nil {
				t.Errorf("key file mode %v: %v", mode, err)
			} else if id.Fingerprint() != first.Fingerprint() {
				t.Errorf("key file mode %v: another key", mode)
			}
		}
	}

	// The certificate is made anew on each load, for the same key.
	for _, id := range []*Identity{first, second} {
		checkCertificate(t, id)
	}
	if second.Name() != "agent-1b" {
		t.Errorf("Name() = %q, want agent-1b", second.Name())
	}
	s1 := first.Certificate().Leaf.SerialNumber
	s2 := second.Certificate().Leaf.SerialNumber
	if s1.Cmp(s2) == 0 {
		t.Errorf("two loads made certificates with the same serial %v", s1)
	}
}

func TestNew(t *testing.T) {
	a, err := New("appliance")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New("appliance")
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() == b.Fingerprint() {
		t.Error("two New identities have the same key")
	}
	checkCertificate(t, a)
}

// checkCertificate checks id's certificate against its key and the contract
// of LoadOrCreate.
func checkCertificate(t *testing.T, id *Identity) {
	t.Helper()
	cert := id.Certificate()
	if len(cert.Certificate) != 1 {
		t.Fatalf("certificate chain has %d certificates, want 1", len(cert.Certificate))
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok {
		t.Fatalf("certificate key is %T, want ed25519.PublicKey", leaf.PublicKey)
	}
	if !pub.Equal(id.PublicKey()) {
		t.Error("certificate key is not the identity's key")
	}
	if fp, _ := FingerprintOf(pub); fp != id.Fingerprint() {
		t.Errorf("certificate key fingerprint %s, Fingerprint() %s", fp, id.Fingerprint())
	}
	priv, ok := cert.PrivateKey.(ed25519.PrivateKey)
	if !ok || !pub.Equal(priv.Public()) {
		t.Error("certificate's private key does not match its public key")
	}
	if leaf.Subject.CommonName != id.Name() {
		t.Errorf("CommonName = %q, want %q", leaf.Subject.CommonName, id.Name())
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("certificate is not self-signed: %v", err)
	}
	now := time.Now()
	if d := now.Sub(leaf.NotBefore); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("NotBefore = %v, want an hour before %v", leaf.NotBefore, now)
	}
	if leaf.NotAfter.Before(now.AddDate(99, 11, 0)) {
		t.Errorf("NotAfter = %v, want 100 years from now", leaf.NotAfter)
	}
	if leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %v is not positive", leaf.SerialNumber)
	}
	if cert.Leaf == nil || !bytes.Equal(cert.Leaf.Raw, leaf.Raw) {
		t.Error("Certificate().Leaf is not the parsed certificate")
	}
}

func TestLoadOrCreateRefuses(t *testing.T) {
	goodKey := func(t *testing.T) []byte {
		_, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		return pkcs8PEM(t, priv)
	}
	cases := []struct {
		name string
		data func(t *testing.T) []byte
		mode os.FileMode
		want string // in the error
		unix bool   // only where modes are checked
	}{
		{name: "empty", data: func(*testing.T) []byte { return nil }, want: "no PEM block"},
		{name: "garbage", data: func(*testing.T) []byte { return []byte("not a key\n") }, want: "no PEM block"},
		{name: "truncated", data: func(t *testing.T) []byte { k := goodKey(t); return k[:len(k)/2] }, want: "no PEM block"},
		{name: "corrupt DER", data: func(*testing.T) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("0123456789abcdef")})
		}, want: "not a valid PKCS #8"},
		{name: "RSA", data: func(t *testing.T) []byte { return pkcs8PEM(t, rsaKey(t)) }, want: "key is RSA, want Ed25519"},
		{name: "ECDSA", data: func(t *testing.T) []byte {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return pkcs8PEM(t, k)
		}, want: "key is ECDSA, want Ed25519"},
		{name: "PKCS1 RSA", data: func(t *testing.T) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey(t))})
		}, want: `PEM block is "RSA PRIVATE KEY"`},
		{name: "headers", data: func(t *testing.T) []byte {
			b, _ := pem.Decode(goodKey(t))
			b.Headers = map[string]string{"Proc-Type": "4,ENCRYPTED"}
			return pem.EncodeToMemory(b)
		}, want: "headers"},
		{name: "two keys", data: func(t *testing.T) []byte { return append(goodKey(t), goodKey(t)...) }, want: "after the PEM block"},
		{name: "mode 0644", data: goodKey, mode: 0o644, want: "mode 0644", unix: true},
		{name: "mode 0640", data: goodKey, mode: 0o640, want: "mode 0640", unix: true},
		{name: "mode 0604", data: goodKey, mode: 0o604, want: "mode 0604", unix: true},
		{name: "mode 0660", data: goodKey, mode: 0o660, want: "mode 0660", unix: true},
		{name: "mode 0620", data: goodKey, mode: 0o620, want: "mode 0620", unix: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.unix && runtime.GOOS == "windows" {
				t.Skip("file modes are not checked on Windows")
			}
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFile)
			data := tc.data(t)
			mode := tc.mode
			if mode == 0 {
				mode = 0o600
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil { // not subject to umask
				t.Fatal(err)
			}
			id, err := LoadOrCreate(dir, "x")
			if err == nil {
				t.Fatalf("LoadOrCreate succeeded with %s (fingerprint %s)", tc.name, id.Fingerprint())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if block, _ := pem.Decode(data); block != nil && len(block.Bytes) > 16 {
				if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(block.Bytes)[:16]) {
					t.Errorf("error %q contains key material", err)
				}
			}
			// Never replaced, never touched, nothing left behind.
			if got := readFile(t, path); !bytes.Equal(got, data) {
				t.Error("the refused key file was changed")
			}
			if entries := dirNames(t, dir); !slices.Equal(entries, []string{KeyFile}) {
				t.Errorf("state directory holds %q, want only %s", entries, KeyFile)
			}
			checkMode(t, path, mode)
		})
	}
}

func TestLoadOrCreateRefusesNonFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, KeyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, "x"); err == nil {
		t.Error("LoadOrCreate succeeded with a directory as the key file")
	}

	if runtime.GOOS == "windows" {
		return
	}
	dir = t.TempDir()
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, "x"); err == nil || !strings.Contains(err.Error(), "dangling symlink") {
		t.Errorf("LoadOrCreate with a dangling symlink as the key file: err = %v, want dangling symlink", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Error("LoadOrCreate created a key through a dangling symlink")
	}
}

// Processes (here goroutines) starting at once on an empty state directory
// all end up with the one key that is on disk.
func TestLoadOrCreateConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	const n = 8
	fps := make([]Fingerprint, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := LoadOrCreate(dir, "x")
			errs[i] = err
			if err == nil {
				fps[i] = id.Fingerprint()
			}
		}()
	}
	wg.Wait()
	final, err := LoadOrCreate(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("LoadOrCreate %d: %v", i, errs[i])
		} else if fps[i] != final.Fingerprint() {
			t.Errorf("LoadOrCreate %d returned key %s, but the key on disk is %s", i, fps[i], final.Fingerprint())
		}
	}
	if entries := dirNames(t, dir); !slices.Equal(entries, []string{KeyFile}) {
		t.Errorf("state directory holds %q, want only %s", entries, KeyFile)
	}
}

// No fmt verb and no slog handler shows the private key.
func TestIdentityPrintsNoKey(t *testing.T) {
	id, err := New("appliance")
	if err != nil {
		t.Fatal(err)
	}
	seed := id.priv.Seed()
	secretForms := []string{
		hex.EncodeToString(seed[:8]),
		strings.ToUpper(hex.EncodeToString(seed[:8])),
		base64.StdEncoding.EncodeToString(seed[:6]),
		strings.Trim(fmt.Sprint(seed[:4]), "[]"),
		fmt.Sprintf("%q", seed[:4]),
	}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outputs = append(outputs, fmt.Sprintf(verb, id), fmt.Sprintf(verb, *id))
	}
	outputs = append(outputs, fmt.Sprint(id), fmt.Sprintln(*id), fmt.Sprintf("%+v", struct{ ID *Identity }{id}))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("hello", "id", id, "value", *id)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("hello", "id", id, "value", *id)
	outputs = append(outputs, buf.String())
	for _, out := range outputs {
		for _, s := range secretForms {
			if strings.Contains(out, s) {
				t.Errorf("output %q contains the private key (%q)", out, s)
			}
		}
	}
	if got, want := fmt.Sprint(id), `"appliance" `+id.Fingerprint().String(); got != want {
		t.Errorf("fmt.Sprint(id) = %q, want %q", got, want)
	}
	if !strings.Contains(buf.String(), id.Fingerprint().String()) {
		t.Errorf("slog output %q does not show the fingerprint", buf.String())
	}
}

func pkcs8PEM(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

var rsaKey = func() func(t *testing.T) *rsa.PrivateKey {
	var once sync.Once
	var key *rsa.PrivateKey
	var err error
	return func(t *testing.T) *rsa.PrivateKey {
		t.Helper()
		once.Do(func() { key, err = rsa.GenerateKey(rand.Reader, 2048) })
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
}()

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (os.ModeDir | os.ModePerm); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
