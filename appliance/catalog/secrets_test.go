package catalog

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testKey returns a secret key made of n repeated.
func testKey(n byte) []byte { return bytes.Repeat([]byte{n}, SecretKeySize) }

func putSecret(t *testing.T, c *Catalog, name string, value []byte) {
	t.Helper()
	update(t, c, func(tx *Tx) error { return tx.PutSecret(name, value) })
}

// getSecret returns Secret(name) from a read transaction.
func getSecret(c *Catalog, name string) ([]byte, error) {
	var v []byte
	err := c.View(context.Background(), func(tx *Tx) (err error) {
		v, err = tx.Secret(name)
		return err
	})
	return v, err
}

func rawSecret(t *testing.T, c *Catalog, name string) []byte {
	t.Helper()
	var raw []byte
	view(t, c, func(tx *Tx) error {
		raw = bytes.Clone(tx.tx.Bucket(bucketSecrets).Get([]byte(name)))
		return nil
	})
	if raw == nil {
		t.Fatalf("no stored record for secret %q", name)
	}
	return raw
}

func TestSecrets(t *testing.T) {
	c, _ := openTemp(t, Options{SecretKey: testKey(1)})
	putSecret(t, c, "license/srv", []byte("KEY-1"))
	putSecret(t, c, "other", []byte{0, 1, 2, 0xff})
	if v, err := getSecret(c, "license/srv"); err != nil || string(v) != "KEY-1" {
		t.Errorf("Secret(license/srv) = %q, %v", v, err)
	}
	if v, err := getSecret(c, "other"); err != nil || !bytes.Equal(v, []byte{0, 1, 2, 0xff}) {
		t.Errorf("Secret(other) = %x, %v", v, err)
	}

	// Replacing, even with the same value, seals afresh (new nonce).
	first := rawSecret(t, c, "license/srv")
	putSecret(t, c, "license/srv", []byte("KEY-1"))
	if again := rawSecret(t, c, "license/srv"); bytes.Equal(first, again) {
		t.Errorf("sealing the same value twice gave the same record %s", again)
	}
	putSecret(t, c, "license/srv", []byte("KEY-2"))
	if v, err := getSecret(c, "license/srv"); err != nil || string(v) != "KEY-2" {
		t.Errorf("Secret after replace = %q, %v", v, err)
	}
	// The largest value fits.
	big := bytes.Repeat([]byte("x"), MaxSecretLen)
	putSecret(t, c, "big", big)
	if v, err := getSecret(c, "big"); err != nil || !bytes.Equal(v, big) {
		t.Errorf("Secret(big): %d bytes, %v", len(v), err)
	}

	_, err := getSecret(c, "missing")
	wantErr(t, "Secret(missing)", err, ErrNotFound)
	update(t, c, func(tx *Tx) error { return tx.DeleteSecret("license/srv") })
	_, err = getSecret(c, "license/srv")
	wantErr(t, "Secret after delete", err, ErrNotFound)
	err = c.Update(context.Background(), func(tx *Tx) error { return tx.DeleteSecret("license/srv") })
	wantErr(t, "second DeleteSecret", err, ErrNotFound)
	if v, err := getSecret(c, "other"); err != nil || len(v) != 4 {
		t.Errorf("Secret(other) after deleting another = %x, %v", v, err)
	}

	tests := []struct {
		name, key string
		value     []byte
		want      error
	}{
		{"valid name characters", "a-Z_0.9:x/y", []byte("v"), nil},
		{"longest name", strings.Repeat("n", 128), []byte("v"), nil},
		{"no name", "", []byte("v"), ErrInvalid},
		{"long name", strings.Repeat("n", 129), []byte("v"), ErrInvalid},
		{"space in name", "a b", []byte("v"), ErrInvalid},
		{"NUL in name", "a\x00", []byte("v"), ErrInvalid},
		{"non-ASCII name", "clé", []byte("v"), ErrInvalid},
		{"empty value", "empty", nil, ErrInvalid},
		{"value too long", "huge", make([]byte, MaxSecretLen+1), ErrInvalid},
	}
	for _, tt := range tests {
		err := c.Update(context.Background(), func(tx *Tx) error { return tx.PutSecret(tt.key, tt.value) })
		wantErr(t, tt.name, err, tt.want)
		_, err = getSecret(c, tt.key)
		if tt.want == nil {
			wantErr(t, tt.name+": read back", err, nil)
		} else {
			wantErr(t, tt.name+": nothing stored", err, ErrNotFound)
		}
	}
}

// TestSecretNotInClear scans the whole file for the value, in clear and in
// the encodings a careless record would use.
func TestSecretNotInClear(t *testing.T) {
	const name = "pairing-7/product-key"
	values := [][]byte{[]byte("CAIRN-PK-7F3A-99QX-ZZ81-K0M2"), []byte("CAIRN-PK-REPLACED-4411-ABCD")}
	c, path := openTemp(t, Options{SecretKey: testKey(1)})
	for _, v := range values {
		putSecret(t, c, name, v)
	}
	if v, err := getSecret(c, name); err != nil || !bytes.Equal(v, values[1]) {
		t.Fatalf("Secret = %q, %v", v, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The scan does see record data: the name is stored in clear.
	if !bytes.Contains(file, []byte(name)) {
		t.Fatalf("the %d-byte file does not contain the secret's name; the scan proves nothing", len(file))
	}
	for _, v := range values {
		for enc, needle := range map[string]string{
			"clear":  string(v),
			"base64": base64.StdEncoding.EncodeToString(v)[:20],
			"hex":    hex.EncodeToString(v)[:20],
		} {
			if bytes.Contains(file, []byte(needle)) {
				t.Errorf("the file contains the value %q (%s)", v, enc)
			}
		}
	}
	if bytes.Contains(file, testKey(1)) {
		t.Error("the file contains the secret key")
	}
}

func TestSecretBoundToName(t *testing.T) {
	c, _ := openTemp(t, Options{SecretKey: testKey(1)})
	putSecret(t, c, "pairing-1/key", []byte("KEY-ONE"))
	putSecret(t, c, "pairing-2/key", []byte("KEY-TWO"))
	// Copy the sealed record of pairing-1 over pairing-2, and to a new name.
	sealed := rawSecret(t, c, "pairing-1/key")
	update(t, c, func(tx *Tx) error {
		b := tx.tx.Bucket(bucketSecrets)
		if err := b.Put([]byte("pairing-2/key"), sealed); err != nil {
			return err
		}
		return b.Put([]byte("pairing-3/key"), sealed)
	})
	for _, name := range []string{"pairing-2/key", "pairing-3/key"} {
		v, err := getSecret(c, name)
		wantErr(t, "moved value "+name, err, ErrInvalid)
		if v != nil {
			t.Errorf("moved value %s opened as %q", name, v)
		}
		if err != nil && !strings.Contains(err.Error(), "moved from another name") {
			t.Errorf("moved value %s: error %q does not say why", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "wrong secret key") {
			t.Errorf("moved value %s: error %q blames the key", name, err)
		}
	}
	if v, err := getSecret(c, "pairing-1/key"); err != nil || string(v) != "KEY-ONE" {
		t.Errorf("original = %q, %v", v, err)
	}
}

func TestSecretTampered(t *testing.T) {
	c, _ := openTemp(t, Options{SecretKey: testKey(1)})
	putSecret(t, c, "s", []byte("value"))
	var good sealedSecret
	view(t, c, func(tx *Tx) (err error) {
		good, err = getIn[sealedSecret](tx, bucketSecrets, []byte("s"))
		return err
	})
	tests := []struct {
		name   string
		change func(*sealedSecret)
	}{
		{"flipped ciphertext bit", func(s *sealedSecret) { s.Sealed[0] ^= 1 }},
		{"flipped tag bit", func(s *sealedSecret) { s.Sealed[len(s.Sealed)-1] ^= 0x80 }},
		{"other nonce", func(s *sealedSecret) { s.Nonce[3] ^= 1 }},
		{"short nonce", func(s *sealedSecret) { s.Nonce = s.Nonce[:8] }},
		{"truncated", func(s *sealedSecret) { s.Sealed = s.Sealed[:4] }},
	}
	for _, tt := range tests {
		bad := sealedSecret{KeyID: good.KeyID, Nonce: bytes.Clone(good.Nonce), Sealed: bytes.Clone(good.Sealed)}
		tt.change(&bad)
		update(t, c, func(tx *Tx) error { return put(tx.tx.Bucket(bucketSecrets), []byte("s"), bad) })
		v, err := getSecret(c, "s")
		wantErr(t, tt.name, err, ErrInvalid)
		if v != nil {
			t.Errorf("%s: opened as %q", tt.name, v)
		}
	}
}

func TestSecretWrongKey(t *testing.T) {
	c, path := openTemp(t, Options{SecretKey: testKey(1)})
	putSecret(t, c, "s", []byte("value"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err := Open(path, Options{SecretKey: testKey(2)})
	if err != nil {
		t.Fatal(err)
	}
	v, err := getSecret(c, "s")
	wantErr(t, "Secret with the wrong key", err, ErrInvalid)
	if v != nil {
		t.Errorf("opened with the wrong key as %q", v)
	}
	if err != nil && !strings.Contains(err.Error(), "wrong secret key") {
		t.Errorf("error %q does not say the key is wrong", err)
	}
	t.Log(err)
	// Writing with the new key works and does not disturb the old value.
	putSecret(t, c, "new", []byte("sealed under key 2"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = Open(path, Options{SecretKey: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := getSecret(c, "s"); err != nil || string(v) != "value" {
		t.Errorf("Secret with the right key = %q, %v", v, err)
	}
	_, err = getSecret(c, "new")
	wantErr(t, "value of key 2 with key 1", err, ErrInvalid)
}

func TestNoSecretKey(t *testing.T) {
	c, path := openTemp(t, Options{SecretKey: testKey(1)})
	putSecret(t, c, "s", []byte("value"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, key := range [][]byte{nil, {}} {
		t.Run(fmt.Sprintf("key %#v", key), func(t *testing.T) {
			c, err := Open(path, Options{SecretKey: key})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Update(context.Background(), func(tx *Tx) error { return tx.PutSecret("t", []byte("v")) })
			wantErr(t, "PutSecret", err, ErrNoSecretKey)
			for _, name := range []string{"s", "missing"} {
				_, err = getSecret(c, name)
				wantErr(t, "Secret("+name+")", err, ErrNoSecretKey)
				if errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) {
					t.Errorf("Secret(%s) without a key: %v also matches ErrInvalid or ErrNotFound", name, err)
				}
			}
		})
	}
	// Deleting needs no key.
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	update(t, c, func(tx *Tx) error { return tx.DeleteSecret("s") })
	view(t, c, func(tx *Tx) error {
		if tx.tx.Bucket(bucketSecrets).Get([]byte("s")) != nil {
			t.Error("DeleteSecret without a key left the record")
		}
		return nil
	})
}

func TestSecretKeyLength(t *testing.T) {
	for _, n := range []int{1, 16, 24, SecretKeySize - 1, SecretKeySize + 1, 64} {
		path := filepath.Join(t.TempDir(), "catalog.db")
		c, err := Open(path, Options{SecretKey: make([]byte, n)})
		if err == nil {
			c.Close()
		}
		wantErr(t, fmt.Sprintf("Open with a %d-byte key", n), err, ErrInvalid)
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%d-byte key: file created anyway (%v)", n, err)
		}
	}
}

// TestSecretKeyCopied checks that Open keeps its own copy of the key.
func TestSecretKeyCopied(t *testing.T) {
	key := testKey(7)
	c, path := openTemp(t, Options{SecretKey: key})
	clear(key)
	putSecret(t, c, "s", []byte("value"))
	if v, err := getSecret(c, "s"); err != nil || string(v) != "value" {
		t.Fatalf("Secret after the caller cleared its key = %q, %v", v, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{SecretKey: testKey(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := getSecret(c, "s"); err != nil || string(v) != "value" {
		t.Errorf("Secret after reopening with the original key = %q, %v", v, err)
	}
}

func TestConcurrentSecrets(t *testing.T) {
	c, _ := openTemp(t, Options{SecretKey: testKey(1)})
	const workers, perWorker = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				name, value := fmt.Sprintf("w%d/s%d", w, i), []byte(fmt.Sprintf("value %d.%d", w, i))
				err := c.Update(context.Background(), func(tx *Tx) error { return tx.PutSecret(name, value) })
				if err == nil {
					var got []byte
					got, err = getSecret(c, name)
					if err == nil && !bytes.Equal(got, value) {
						err = fmt.Errorf("%s = %q, want %q", name, got, value)
					}
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
