// Landing page: the frame, and a hint to sign in.
import { frame, notice, fill } from './portaal.js';

const s = frame('');
if (!s) {
  fill(document.getElementById('meldingen'),
    notice('info', 'U bent niet aangemeld.', 'Kies hierboven "Aanmelden" om uw eigen gegevens te zien.'));
}
