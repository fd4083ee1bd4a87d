package main

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/channel/push"
)

const pushUsage = `herald push vapid-keys

Make a Web Push application server key pair (VAPID, RFC 8292). Give the
private key to the server as push.vapid-private-key (keep it secret; every
node needs the same one) and the public key to browsers as the
applicationServerKey of pushManager.subscribe(). Changing the key later
makes every existing browser subscription fail.`

func pushVerb(_ context.Context, c *cli, args []string) error {
	fs := c.flagSet("push", pushUsage)
	rest, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if rest[0] != "vapid-keys" {
		return usageErrorf("push: unknown subverb %q; want vapid-keys", rest[0])
	}
	private, public, err := push.GenerateVAPIDKey()
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(map[string]string{"private_key": private, "public_key": public})
	}
	_, err = fmt.Fprintf(c.stdout, "private key (push.vapid-private-key): %s\npublic key (applicationServerKey):  %s\n", private, public)
	return err
}
