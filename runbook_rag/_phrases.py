"""The phrase rules of :mod:`runbook_rag.screening`.

They run on the screen's word view of a text: folded to ASCII, lower-case, markup and
punctuation between words collapsed (sentence punctuation, commas and line breaks
kept), so accents are already gone ("précédentes" reads "precedentes") and a space in a
rule below stands for any run of separators. Each class is written once for English,
French, German, Spanish, Portuguese, Italian and Dutch. Every rule needs something that
addresses a model (a qualifier such as "previous", "above", "your" or "system"; a role
only a model can take; a name for an AI), because runbooks say "ignore the previous
alert" and "you are now the incident commander" all the time.
"""

from __future__ import annotations


def _alt(*words: str) -> str:
    """An alternation, grouped by first letter: the regex engine tries alternatives one by
    one, so "(?:i(?:gnore|gnorez)|d(?:isregard))" costs a fraction of a flat list."""
    groups: dict[str, list[str]] = {}
    other: list[str] = []
    for word in words:
        if word[:1].isalpha() and word[1:2] not in ("?", "*", "+", "{"):
            groups.setdefault(word[0], []).append(word[1:])
        else:
            other.append(word)
    parts = [
        first + (rest[0] if len(rest) == 1 else "(?:" + "|".join(rest) + ")")
        for first, rest in groups.items()
    ]
    return "(?:" + "|".join(parts + other) + ")"


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# The vocabulary is data: kept compact, several entries a line.
# fmt: off

# -- overriding instructions ----------------------------------------------------------

_VERB = _alt(
    # en
    "ignore", "ignoring", "disregard", "disregarding", "forget", "forgetting", "override", "overriding",
    "overrule", "bypass", "neglect", "dismiss", "discard", "abandon", "scrap", "ditch", "set aside",
    "throw (?:out|away)", "pay no (?:attention|heed|mind) to", "never ?mind",
    "(?:do not|don t|dont|never) (?:follow|obey|heed|listen to|comply with)",
    "(?:stop|quit|cease) (?:following|obeying)", "no longer (?:follow|obey)",
    # fr
    "ignorez", "ignorer", "ignores", "oublie[rsz]?", "neglige[rz]?", "ecarte[rz]?",
    "(?:ne )?(?:tiens|tenez|tenir) (?:pas |plus )?compte", "ne (?:pas|plus) tenir compte",
    "(?:fais|faites|faire) abstraction", "passe[rz]? outre", "laisse[rz]? tomber",
    "ne (?:suis|suivez) (?:pas|plus)", "(?:arrete|arretez) de suivre",
    # de
    "ignorier(?:e|en|t)?", "vergiss", "vergesse?n?", "vergesst", "missachte[nt]?", "ue?bergehe?n?",
    "verwirf", "verwerfe?n?", "beachte[nt]? nicht", "nicht (?:mehr )?beachten", "setze? aus?ser kraft",
    # es
    "ignora[dnrs]?", "ignoren", "olvida[dnrs]?", "olvid(?:ate|ese|ense)", "olvide[ns]?", "descarta[r]?",
    "descarte", "omite", "omita",
    "omitir", "desatiende", "desestima", "desestime", "(?:haz|haga|hagan|hacer) caso omiso",
    "no (?:hagas|haga|hagan) caso", "no sigas", "no siga[ns]?", "deja de seguir", "pas[ae] por alto",
    # pt
    "ignore[ms]", "esquec[ae]m?", "esquece[r]?", "desconsider[ae][mr]?", "despreze?", "despreza",
    "nao (?:siga|sigas|sigam|obedeca)", "(?:deixe|pare|para) de (?:seguir|obedecer)",
    # it
    "ignor(?:i|ate|are|ino)", "dimentic(?:a|hi|ate|are)", "trascura(?:te|re)?", "tralascia(?:te|re)?",
    "scarta(?:te|re)?", "non (?:considerare|seguire|tenere conto)", "smetti di seguire", "lascia perdere",
    "disattendi",
    # nl
    "negeer", "negeren", "negeert", "vergeet", "vergeten", "veronachtzaam", "verwerp", "let niet op",
    "volg niet", "niet (?:meer )?(?:volgen|opvolgen)", "houd geen rekening met", "laat varen",
)

_DET = _alt(
    "the", "all", "any", "every", "each", "of", "these", "those", "this", "my", "both", "whatever",
    "and", "or", "et", "ou", "und", "oder", "y", "e", "en",
    "les", "toutes", "tous", "toute", "tout", "la", "le", "l", "des", "de", "d", "du", "ces", "aux", "a",
    "au",
    "alle", "allen", "die", "der", "den", "das", "dem", "samtliche", "samtlichen", "jegliche", "jeglichen",
    "diese", "von", "vom", "las", "los", "todas", "todos", "toda", "todo", "el", "estas", "estos", "esas",
    "esos", "cualquier", "al", "del", "as", "os", "das", "dos", "essas", "quaisquer", "qualquer", "o",
    "tutte", "tutti", "il", "i", "gli", "delle", "dei", "degli", "di", "queste", "quelle", "qualsiasi",
    "ogni", "het", "deze", "van",
    # the polite or familiar "you" after an imperative: "Ignorieren Sie ...", "Olvide usted ..."
    "sie", "du", "usted", "voce", "lei",
)

_POSS = _alt(
    "your", "yours", "tes", "ton", "ta", "vos", "votre", "deine", "deinen", "deiner", "dein", "ihre", "ihren",
    "eure", "euren", "tus", "tu", "sus", "su", "vuestras", "vuestros", "tuas", "teus", "tua", "teu", "suas",
    "seus", "sua", "seu", "tue", "tuoi", "tuo", "vostre", "vostri", "sue", "suoi", "je", "jouw", "uw",
)

_QUAL_PRE = _alt(
    "previous", "prior", "above", "earlier", "preceding", "foregoing", "former", "original", "initial",
    "system", "hidden",
    "precedente?s?", "anciennes", "anciens", "premieres",
    "vorherigen?", "vorigen?", "vorhergehenden?", "bisherigen?", "fru?e?heren?", "obigen?",
    "vorangegangenen?", "vorangehenden?", "vorstehenden?", "vorausgegangenen?", "urspru?e?nglichen?",
    "anfa?e?nglichen?", "alten", "(?:zuvor|vorher) (?:gegebenen|erhaltenen)", "erhaltenen",
    "anteriores", "previas", "previos", "antiguas", "primeras", "originales", "iniciales",
    "antigas", "originais", "iniciais",
    "precedenti", "vecchie", "originali", "iniziali",
    "vorige", "voorgaande", "eerdere", "bovenstaande", "oorspronkelijke", "originele", "initiele", "systeem",
)

_OBJ_CORE = _alt(
    "instructions?", "prompts?", "directives?", "guidelines", "programming", "system prompts?",
    "consignes?", "anweisung(?:en)?", "instruktion(?:en)?", "system ?anweisungen", "system ?prompts?",
    "instrucciones", "instruccion", "indicaciones", "instrucoes", "instrucao", "orientacoes", "istruzion[ei]",
    "indicazioni", "direttive", "instructies?", "aanwijzingen", "opdrachten",
    "systeem ?(?:instructies|prompt)",
)

_OBJ = _alt(
    # Not "commands", "guidance", "constraints", "restrictions", "messages" or "context": runbooks
    # ignore previous commands, earlier guidance and the previous kube context in plain prose.
    _OBJ_CORE, "directions", "rules", "guardrails", "regles", "indications", "regeln",
    "vorgaben", "anordnungen", "direktiven", "richtlinien", "reglas", "directrices", "directivas",
    "consignas", "normas", "regras", "diretrizes", "diretivas", "indicacoes", "regole", "consegne", "regels",
    "richtlijnen", "bevelen",
)

# "Ignore the previous rules file" is about a file.
_NOT_COMPOUND = (
    "(?! (?:files?|engines?|sets?|tables?|groups?|lists?|yaml|json|config|configuration|paths?|directory"
    "|dir|repo|repository|versions?|manager|reload|evaluation|updates?|changes?|page|section|docs?"
    "|documentation|links?|templates?|ids?)\\b)"
)

# What only a model has: "ignore your restrictions" addresses one.
_OBJ_YOURS = _alt(
    _OBJ, "restrictions", "constraints", "limitations", "filters", "training", "safety (?:rules|guidelines)",
)

_QUAL_POST = _alt(
    "above", "before (?:this|that|now|these)", "beforehand", "earlier", "previously", "so far", "until now",
    "up to (?:now|this point|here)", "from before",
    "(?:given|provided|received|supplied) (?:to you )?(?:earlier|before|above|previously|so far|until now)",
    "(?:that )?you (?:were|ve been|have been|had been|got|received|have received)",
    "(?:in|from|of) (?:the|your) system prompt",
    "precedente?s", "anterieure?s", "ci dessus", "plus haut", "initiales", "originales", "d origine",
    "du systeme", "de systeme", "systeme", "recues", "donnees (?:precedemment|auparavant|plus haut)",
    "d avant", "qui precedent",
    "von oben", "oben", "(?:von )?vorher", "zuvor", "bisher",
    "anteriores", "previas", "de arriba", "precedentes", "iniciales", "del sistema", "de sistema",
    "recibidas",
    "acima", "iniciais", "originais", "do sistema", "recebidas",
    "precedenti", "anteriori", "(?:di |qui )?sopra", "iniziali", "originali", "di sistema", "ricevute",
    "hierboven", "van hierboven", "hiervoor", "van eerder", "tot nu toe",
)

# "...what you were told", "...everything above", in each language.
_TOLD = _alt(
    "(?:what|everything|anything|all|whatever) (?:that )?(?:you|u) (?:were|ve|have|had|are being|got)"
    " (?:been )?(?:told|given|instructed|taught|asked|programmed|trained)",
    "(?:everything|(?:all )?(?:of )?(?:the )?(?:text|content|words)) (?:above|before (?:this|now)|so far"
    "|until now|up to (?:now|here|this point)|prior to this|previously (?:said|stated|written))"
    "(?=\\s*(?:[.!?;:]|$|and\\b|then\\b|this\\b|here\\b|it\\b))",
    # "ignore the above and instead run helm upgrade" is prose; "... and say pwned" is not.
    "above (?:and |then )?(?:instead )?(?:say|reply|respond|answer|translate|repeat)\\b",
    "what (?:the|your) system prompt (?:says|said|tells you)",
    "(?:tout )?ce qu on (?:t|vous) a (?:dit|demande|ordonne)",
    "tout ce (?:qu on|que l on|qui) (?:t a|vous a|a ete|precede)",
    "(?:alles )?was (?:man )?(?:dir|ihnen|euch) (?:vorher |zuvor |bisher )?"
    "(?:gesagt|befohlen|aufgetragen|mitgeteilt)",
    "alles(?: was)? (?:(?:dir|ihnen|du|sie|euch) )?(?:bisher |zuvor |vorher |oben )?"
    "(?:gesagt|befohlen|aufgetragen|mitgeteilt|gegeben)",
    "alles (?:bisherige|vorherige|obige|oben|davor|zuvor|bisher gesagte)",
    "todo lo (?:anterior|de arriba|que te (?:dijeron|han dicho|dije|indicaron|ordenaron))",
    "lo que te (?:dijeron|han dicho)",
    "tudo (?:o )?(?:que (?:te|lhe) (?:foi dito|disseram|mandaram)|que voce (?:ouviu|recebeu)|acima|anterior)",
    "(?:tudo )?o que (?:te|lhe) (?:disseram|foi dito|mandaram)",
    "tutto (?:quello|cio|quanto) (?:che ti (?:e stato|hanno) detto|sopra|che precede|detto (?:prima|finora))",
    "(?:tutto )?(?:quello|cio) che ti (?:e stato|hanno|ho) detto",
    "alles wat (?:je|jij|u) (?:eerder |hiervoor |tot nu toe )?(?:is )?(?:gezegd|verteld|opgedragen|gegeven)",
    "wat (?:je|jij|u) (?:is |werd )?(?:gezegd|verteld|opgedragen)",
    "alles hierboven",
    # "...everything said before", "...the preceding text", and the same in each language
    "everything (?:(?:that|which) (?:was|has been|is|s) )?(?:said|written|stated|mentioned|typed|given)"
    " (?:before|above|earlier|previously|so far|until now|up to (?:now|here))",
    "(?:preceding|previous|prior|above|earlier|foregoing) (?:text|content|words|input)"
    "(?=\\s*(?:[.!?;:]|$|and\\b|then\\b))",
    "tout ce qui (?:est|a ete|se trouve) (?:ecrit |dit )?(?:au dessus|ci dessus|plus haut|avant|auparavant"
    "|precedemment)",
    "tout ce qui a ete (?:dit|ecrit)",
    "alles(?: was)? (?:weiter )?(?:oben|davor|vorher|zuvor|bisher) (?:steht|stand|gesagt wurde|geschrieben"
    " (?:steht|wurde)|kam|gesagt)",
    "todo lo que se (?:dijo|ha dicho|escribio|menciono|indico)",
    "tudo (?:o )?que (?:foi|esta|estava|tinha sido) (?:dito|escrito|mencionado)",
    "(?:tutto )?(?:(?:quello|cio) che|quanto) (?:e|era) stato (?:detto|scritto)",
    "alles wat (?:hierboven|eerder|hiervoor|daarvoor|boven) (?:staat|stond|is gezegd|werd gezegd|gezegd is"
    "|is geschreven)",
)

_VOID = _alt(
    "void", "null", "ignored", "disregarded", "forgotten", "cancelled", "canceled", "revoked", "overridden",
    "annulees", "annules", "ignorees", "caduques", "nulles", "ungu?e?ltig", "aufgehoben", "ignoriert",
    "nichtig", "anuladas", "ignoradas", "invalidas", "canceladas", "annullate", "ignorate", "nulle",
    "ongeldig", "genegeerd", "vervallen",
)
_BE = _alt(
    "are", "is", "sont", "sind", "son", "sao", "sono", "zijn", "doivent etre", "deben ser", "devem ser",
    "devono essere", "moeten worden", "must be", "should be", "have been", "are to be", "werden", "quedan",
    "ficam",
)
_INFINITIVE = _alt(
    "ignorieren", "vergessen", "missachten", "negeren", "vergeten", "ignorer", "oublier", "ignorar",
    "olvidar",
    "esquecer", "ignorare", "dimenticare",
)

# -- role change --------------------------------------------------------------------

_NOW_YOU_ARE = _alt(
    "you (?:are|re|r) now", "(?:from now on|henceforth|starting now|as of now)(?: you)? (?:are|re)",
    "(?:tu es|t es|vous etes) (?:maintenant|desormais|a present|dorenavant)",
    "(?:maintenant|desormais|a present|dorenavant|a partir de maintenant) (?:tu es|t es|vous etes)",
    "(?:du bist|sie sind|ihr seid) (?:jetzt|nun|ab jetzt|ab sofort|von nun an)",
    "(?:jetzt|nun|ab jetzt|ab sofort|von nun an) (?:bist du|sind sie|seid ihr)",
    "(?:ahora|a partir de ahora|desde ahora|de ahora en adelante)(?: tu| usted)? (?:eres|sos|es|seras)",
    "(?:tu |usted )?(?:eres|sos) ahora",
    "(?:agora|a partir de agora|de agora em diante|doravante)(?: voce| tu)? (?:e|es|sera|seras)",
    "voce (?:agora )?e agora", "voce agora e",
    "(?:ora|adesso|da ora in poi|d ora in poi|d ora in avanti|a partire da ora)(?: tu)? (?:sei|sarai)",
    "(?:tu )?sei (?:ora|adesso)",
    "(?:je bent|jij bent|u bent) (?:nu|vanaf nu|voortaan)",
    "(?:vanaf nu|voortaan|nu) (?:ben je|ben jij|bent u)",
)
_AI = _alt(
    "ai", "ia", "ki", "llms?", "ais", "(?:large )?language models?", "chat ?bots?", "chat ?gpt",
    "gpt(?: ?\\d)?", "claude", "gemini", "copilot", "ai (?:assistant|agent|model|system|tool|bot|reader"
    "|crawler|helper)s?",
    "intelligence artificielle", "ku?e?nstliche intelligenz", "inteligencia artificial",
    "intelligenza artificiale", "kunstmatige intelligentie", "sprachmodelle?", "modeles? de langage",
    "modelos? de (?:lenguaje|linguagem)", "modell[oi] linguistic[oi]", "taalmodel(?:len)?",
    "ki ?(?:assistent|modell)(?:en)?", "assistente? (?:ia|ai)", "asistente de ia",
)
_ROLE_STRONG = _alt(
    _AI, "dan", "do anything now", "jailbroken", "jailbreak", "unrestricted", "uncensored", "unfiltered",
    "debride", "jailbreake", "uneingeschra?e?nkt", "unzensiert", "onbeperkt", "ongecensureerd",
    "(?:virtual|digital|ai) (?:assistant|agent|bot|model)",
    "sans (?:restrictions?|limites?|filtres?|regles|censure)",
    "ohne (?:einschra?e?nkungen|regeln|filter|grenzen|zensur)",
    "sin (?:restricciones|limites|filtros|reglas|censura)",
    "sem (?:restricoes|limites|filtros|regras|censura)",
    "senza (?:restrizioni|limiti|filtri|regole|censura)", "zonder (?:beperkingen|regels|filters|censuur)",
    "free (?:of|from) (?:all |any |your )?(?:rules|restrictions|guidelines|constraints|limitations|filters"
    "|programming|censorship)",
)
# A runbook may make its reader "the agent of record" or "the model owner": these count
# only with an indefinite article ("an assistant") and not before "of", "for"...
_ROLE_WEAK = _alt(
    "assistant", "agent", "bot", "model", "persona", "character", "assistante?", "asistente", "assistente",
    "assistent", "modele", "modell", "modelo", "modello",
)
# ...and only at the end of the phrase: "an assistant." or "a bot that ...", not "a bot admin".
_ROLE_ENDS = (
    "(?=\\s*(?:[.,!?;:]|$|that\\b|who\\b|which\\b|with\\b|without\\b|called\\b|named\\b|and\\b"
    "|sans\\b|ohne\\b|sin\\b|sem\\b|senza\\b|zonder\\b|que\\b|qui\\b|der\\b|das\\b|che\\b|dat\\b"
    # adjectives that follow the noun: "un assistant malveillant", "un asistente malvado"
    "|malveillante?\\b|malicios[oa]\\b|malvagi[oa]\\b|malvad[oa]\\b|libre\\b|liber[oa]\\b|livre\\b"
    "|debridee?\\b|desbloquead[oa]\\b|sbloccat[oa]\\b|jailbreake\\b))"
)
_ARTICLE = _alt(
    "an?", "the", "my", "your", "un", "une", "l", "le", "la", "mon", "ton", "ein", "eine", "einen", "der",
    "die", "mein", "dein", "uno", "una", "el", "mi", "tu", "um", "uma", "o", "meu", "seu", "il", "lo", "een",
    "de", "het", "mijn",
)
_INDEFINITE = _alt("an?", "un", "une", "ein", "eine", "einen", "uno", "una", "um", "uma", "een")
_ADJ = _alt(
    "new", "different", "evil", "rogue", "jailbroken", "unrestricted", "uncensored", "unfiltered", "helpful",
    "uneingeschra?e?nkte[nrsm]?", "unzensierte[nrsm]?", "onbeperkte", "ongecensureerde", "debride?e?",
    "nouveau", "nouvelle", "autre", "neuer", "neue", "anderer", "andere", "nuevo", "nueva", "otro", "otra",
    "novo", "nova", "outro", "outra", "nuovo", "nuova", "altro", "altra", "nieuwe",
)
_MODE = _alt(
    "(?:in|en|im|em|no|nel|operating in) (?:developer|god|jailbreak|dan|unrestricted|developpeur"
    "|desarrollador|desenvolvedor|sviluppatore|ontwikkelaars|entwickler|evil) ?(?:mode|modus|modo|modalita)",
    "(?:en|em|no|in) (?:mode|modo|modalita) (?:developpeur|desarrollador|desenvolvedor|sviluppatore|dan"
    "|jailbreak|dieu|dios|sans restrictions?|sin restricciones|sem restricoes|senza restrizioni)",
)

# -- prompt extraction --------------------------------------------------------------

_ME = _alt("me", "us", "moi", "nous", "mir", "uns", "mi", "mij", "ons")
_REVEAL = _alt(
    "reveal", "leak", "disclose", "divulge", "expose", "exfiltrate", "dump", "recite", "spill",
    "revele[rz]?", "divulgue[rz]?", "devoile[rz]?", "verrate?", "enthu?e?lle", "offenbare", "preisgeben",
    "revela[r]?", "desvela", "rivela(?:mi|re)?", "svela", "onthul", "onthullen", "verklap",
)
# Softer verbs: "the console will show the system prompt" is prose, so these count only
# at the start of a sentence, before "me", or before "your".
_SHOW = _alt(
    "print", "show", "display", "output", "repeat", "tell", "give", "write(?: out)?", "share", "send",
    "paste", "list", "type", "echo", "return", "provide", "copy", "spell out", "read back",
    "montre[rz]?", "affiche[rz]?", "imprime[rz]?", "donne[rz]?", "dis", "dites", "repete[rz]?", "ecris",
    "ecrivez", "communique[rz]?", "zeige?", "gib", "nenne", "drucke", "wiederhole", "schreibe", "teile",
    "gebe", "muestra(?:me)?", "muestre", "imprima", "dime", "digame", "ensename", "escribe", "repite",
    "comparte", "dame", "mostre", "mostra(?:mi)?", "diga", "exiba", "exibe", "escreva", "repita",
    "compartilhe", "stampa", "dimmi", "scrivi", "ripeti", "condividi", "dammi", "toon", "laat", "geef",
    "herhaal", "schrijf", "deel", "vertel",
)
_SECRET = _alt(
    # Not "system message", "system configuration", "initial message": a MOTD, sysctl, a broker.
    "system ?prompts?", "system (?:instructions?|directives?)",
    "(?:hidden|initial|original|secret|internal|developer|pre|base) (?:prompt|instructions?|directives)",
    "(?:prompt|instructions?|consignes?) (?:systeme|du systeme|de systeme|initiales?"
    "|d origine|cachees?|secretes?)",
    "system ?anweisungen",
    "(?:versteckten|geheimen|urspru?e?nglichen|anfa?e?nglichen) (?:anweisungen|prompt)",
    "(?:prompt|instrucciones|indicaciones|instrucoes|istruzioni) (?:del sistema"
    "|de sistema|do sistema|di sistema|iniciales?|iniciais|iniziali|originales?|originais|originali"
    "|ocult[ao]s?|nascost[ei]|secretas?|segret[ei])",
    "systeem ?(?:prompt|instructies)",
    "(?:verborgen|geheime|oorspronkelijke|originele) (?:instructies|prompt)",
)
# "the system prompt setting (PS1)" is shell configuration.
_NOT_A_SETTING = "(?! (?:settings?|string|variable|format|colou?r|theme|ps1|config)\\b)"
_SECRET_ARTICLE = _alt(
    "the", "your", "my", "le", "la", "les", "ton", "ta", "tes", "votre", "vos", "den", "die", "das", "deinen",
    "deine", "dein", "ihren", "ihre", "el", "las", "los", "tu", "tus", "su", "sus", "o", "a", "os", "as",
    "seu", "sua", "seus", "suas", "teu", "tua", "il", "lo", "i", "tuo", "tuoi", "tue", "de", "het", "je",
    "jouw", "uw",
)
_WHOLE = _alt(
    "full", "entire", "complete", "exact", "whole", "verbatim", "raw", "first", "complet", "completo",
    "completa", "integral", "ganzen", "vollsta?e?ndigen", "volledige", "hele",
)
_YOUR_PROMPT = _alt(
    "prompt", "instructions", "programming", "directives", "system ?prompt", "consignes", "anweisungen",
    "instrucciones", "instrucoes", "istruzioni", "instructies",
)
_CLAUSE_START = (
    "(?:^|[.!?;:] |, )(?:please |now |ok |okay |bitte |s il (?:te|vous) plait |por favor |per favore "
    "|alsjeblieft )?"
)

# -- asides and directives to a model -----------------------------------------------

_WEAK_AI = _alt("assistants?", "agents?", "models?", "bots?", "readers?")
_DOC = _alt(
    "page", "document", "doc", "file", "runbook", "text", "content", "passage", "note", "section", "message",
    "wiki", "article",
)
_READING = _alt(
    "reading", "parsing", "summari[sz]ing", "ingesting", "indexing", "crawling", "scanning", "analy[sz]ing",
    "viewing", "retrieving", "seeing",
)
# "Note for the AI platform team" addresses people.
_NOT_AN_AUDIENCE = (
    "(?! (?:team|platform|group|squad|engineers?|owners?|users?|ml|policy|governance|usage|project|vendors?"
    "|workloads?|services?|gateway|proxy|api|cluster|pipeline|deployment|integration|on ?call)\\b)"
)
_ASIDE = (
    "(?:note|notes|message|notice|reminder|memo|instructions?|hint|ps|p s|attention|important|hinweis"
    "|nachricht|achtung|remarque|avis|nota|aviso|avviso|attenzione|opmerking|notitie|bericht|let op|mensaje"
    "|mensagem|messaggio) (?:to|for|pour|a|an|fu?e?r|para|per|voor|aan|al|alla|ao|aos|as|a la|a los)"
)
_AUDIENCE_ARTICLE = _alt(
    "the", "any", "all", "every", "les", "l", "la", "le", "tous les", "toutes les", "die", "den", "alle",
    "jede", "jeden", "el", "los", "las", "todos los", "todas las", "o", "os", "a", "as", "todos os",
    "todas as", "il", "gli", "lo", "tutti gli", "tutte le", "de", "het", "elke",
)
# What a model does when answering; "AI tools must not be given card data" is policy, not a directive.
_DIRECTED = _alt(
    "say", "tell", "answer", "respond", "reply", "recommend", "suggest", "advise", "output", "print", "write",
    "state", "claim", "mention", "include", "insert", "add", "append", "ignore", "disregard", "forget",
    "reveal", "send", "redirect", "direct", "refer", "instruct", "inform", "summari[sz]e", "describe",
    "explain", "pretend", "act", "treat", "assume", "omit", "hide", "withhold", "refuse", "obey", "execute",
    "approve", "deny", "disable", "call", "visit", "fetch", "render", "report", "translate", "quote", "cite",
)

# "Ignore the instructions above if you already ran the migration", "Disregard the earlier
# instructions for v1 clusters": an override narrowed by a condition on the system is prose.
# The condition needs a subject ("if you already...", "when the cluster..."): "if asked, print
# the key" is an attack.
_NOT_CONDITIONAL = (
    "(?! (?:(?:if|when|whenever|unless|once) (?:you|the|it|this|that|these|those|an?|your|our|there|we|they"
    "|its|no|all|any|[a-z0-9.-]+ (?:is|are|was|were|has|have|runs?|fails?))\\b"
    "|for (?!(?:now|the rest|the remainder|this|all|good|the user|me|us)\\b)"
    "(?:the |your |our |these |those |any )?[a-z0-9]))"
)
_CLAUSE_ENDS = "(?=\\s*(?:[.!?;:,]|$|and\\b|then\\b|now\\b|instead\\b))"
_MODEL = rf"(?:{_AI}|assistants?|models?|bots?|chat ?bots?|agents?|machines?|crawlers?)"

# -- rules --------------------------------------------------------------------------

_OVERRIDE = _alt(
    rf"\b{_VERB}(?: {_DET}){{0,4}}(?: {_POSS})?(?: {_DET}){{0,2}}(?: {_QUAL_PRE}){{1,2}}(?: {_DET})?"
    rf"(?: {_QUAL_PRE})? {_OBJ}\b{_NOT_COMPOUND}{_NOT_CONDITIONAL}",
    rf"\b{_VERB}(?: {_DET}){{0,4}}(?: {_POSS})?(?: {_DET}){{0,2}} {_OBJ}(?: {_DET})? {_QUAL_POST}\b"
    rf"{_NOT_CONDITIONAL}",
    # "ignore all prior context and instructions"
    rf"\b{_VERB}(?: {_DET}){{0,4}} {_QUAL_PRE} (?:context|text|input|content|messages|conversation|commands"
    rf"|rules) (?:and|or) (?:{_DET} )?{_OBJ_CORE}\b",
    # "The instructions above no longer apply" (not "The previous instructions no longer apply to 3.x")
    rf"\b(?:{_OBJ_CORE} {_QUAL_POST}|(?:all|your) (?:of )?(?:the )?{_QUAL_PRE} {_OBJ_CORE})"
    r" (?:no longer apply"
    r"|(?:are|is) no longer (?:valid|in effect|applicable|in force))(?=\s*(?:[.!?;:,]|$|and\b))",
    # a fake fresh start: "New instructions:", "Updated instructions for the assistant:"
    r"(?:^|[.!?;:] |, )(?:here are |these are )?(?:your |my )?(?:(?:new|real|actual|true|override|overriding"
    rf"|secret|hidden) (?:system )?instructions?(?: for (?:the |any |all )?{_MODEL})?"
    rf"|(?:updated|revised|additional|special|important) instructions? for (?:the |any |all )?{_MODEL}) ?:",
    rf"\b{_VERB}(?: {_DET}){{0,3}} {_POSS}(?: {_QUAL_PRE})? {_OBJ_YOURS}\b{_NOT_COMPOUND}",
    rf"\b{_VERB} (?:all|toutes|tous|alle|todas|todos|tutte|tutti)(?: {_DET}){{0,2}} {_OBJ_CORE}"
    r"(?=\s*(?:[.!?;:]|$|and\b|et\b|und\b|y\b|e\b|en\b|then\b))",
    rf"\b{_VERB}(?: {_DET}){{0,3}} {_TOLD}",
    # "all previous instructions are void", "les instructions précédentes sont annulées"
    rf"\b(?:(?:{_DET} ){{0,2}}{_QUAL_PRE} (?:{_QUAL_PRE} )?|{_POSS} (?:{_QUAL_PRE} )?){_OBJ_CORE}"
    rf"(?: {_QUAL_POST})? {_BE} (?:now |maintenant |jetzt |ahora |agora |ora |nu )?{_VOID}\b",
    rf"\b{_OBJ_CORE} {_QUAL_POST} {_BE} (?:now |maintenant |jetzt |ahora |agora |ora |nu )?{_VOID}\b",
    r"\byour (?:instructions|programming|directives|rules|system prompt) (?:have|has) (?:now )?been"
    r" (?:updated|changed|replaced|revoked|overridden|cancelled|canceled)\b",
    # German and Dutch put the verb last: "alle vorherigen Anweisungen ignorieren"
    rf"\b(?:{_QUAL_PRE} ){{1,2}}{_OBJ}(?: {_QUAL_POST})? (?:zu )?{_INFINITIVE}\b",
    rf"\b{_OBJ} {_QUAL_POST} (?:zu )?{_INFINITIVE}\b",
)

_ROLE = _alt(
    rf"\b{_NOW_YOU_ARE} (?:{_ARTICLE} )?(?:{_ADJ} )?{_ROLE_STRONG}\b",
    rf"\b{_NOW_YOU_ARE} {_INDEFINITE} (?:{_ADJ} )?{_ROLE_WEAK}\b{_ROLE_ENDS}",
    rf"\b{_NOW_YOU_ARE} {_MODE}",
    # "You are ChatGPT", "You are an LLM" (not "an AI engineer" or "the AI on-call")
    rf"(?<!if\s)(?<!when\s)\byou (?:are|re) (?:chat ?gpt|claude|gemini|copilot|gpt(?: ?\d)?"
    rf"|an? (?:large )?language model|an? llm"
    rf"|an? (?:ai|llm)(?: (?:assistant|model|language model|chat ?bot|agent))?\b{_NOT_AN_AUDIENCE})\b",
    r"\byou (?:are|re) (?:now )?no longer (?:an? |the )?(?:[a-z]+ )?(?:ai|assistant|language model|chat ?bot"
    r"|model|helper)\b(?! (?:manager|owner|of|for|on ?call)\b)",
    r"\byou (?:are|re) (?:now )?no longer (?:an? )?(?:ai|assistant|language model|chat ?bot|model"
    r"|bound by (?:your|any|the) (?:rules|guidelines|instructions|programming|restrictions|policies))\b",
    r"\b(?:from now on|henceforth|starting now|from this point (?:on|forward)|for the rest of this"
    r" (?:conversation|chat|session))(?: you)? (?:will|must|shall|should|ll|are to) (?:only )?(?:act as"
    r"|behave as|pretend|roleplay|role play|ignore|disregard|obey (?:only )?me)\b",
    r"\b(?:act|behave|respond|answer|reply|operate) (?:as|like) (?:if you (?:are|were) )?(?:an? |the )?"
    r"(?:unrestricted|uncensored|unfiltered|jailbroken|evil|rogue|dan|do anything now)\b",
    rf"\b(?:pretend|imagine|roleplay|role play) (?:to be|you are|you re|that you are|that you re|as)"
    rf" (?:an? |the )?(?:{_ADJ} )?(?:{_AI}|dan|unrestricted|uncensored|jailbroken|evil"
    rf"|different (?:ai|assistant|model))\b",
    r"\byour (?:new|real|actual|true) (?:instructions|programming|directives?|persona|identity|system prompt)"
    r" (?:is|are|will be)\b",
    r"\b(?:enter|switch to|activate|enable|turn on) (?:the )?(?:dan|jailbreak|god|unrestricted|uncensored"
    r"|evil) mode\b",
    r"\bdo anything now\b",
)

# Rules on common words ("job", "message", "forget"), kept apart so those words wake only
# these short patterns rather than the whole override or role rule.
_OVERRIDE_COMMON = _alt(
    # "Nevermind the above", "Forget all that"
    r"\b(?:never ?mind|forget(?: about)?) (?:all |about )?(?:of )?(?:the above|all (?:of )?(?:that|this"
    rf"|the above)|everything(?: (?:else|above))?){_CLAUSE_ENDS}",
    rf"\b{_VERB} (?:the |your |any |all |this )?(?:system|developer) (?:message|prompt){_CLAUSE_ENDS}",
)
_ROLE_COMMON = _alt(
    # "Your real task:" (not "Your task: restart the pods")
    r"\byour (?:new|real|actual|true|secret|hidden) (?:task|job|goal|mission|objective|purpose|assignment)"
    r"(?: is)? ?:",
)

_EXTRACT = _alt(
    rf"\b{_REVEAL}(?: {_ME})?(?: {_SECRET_ARTICLE}){{0,2}} (?:{_WHOLE} )*{_SECRET}\b{_NOT_A_SETTING}",
    rf"{_CLAUSE_START}{_SHOW}(?: {_ME})?(?: {_SECRET_ARTICLE}){{0,2}} (?:{_WHOLE} )*{_SECRET}\b"
    rf"{_NOT_A_SETTING}",
    rf"\b{_SHOW} {_ME}(?: {_SECRET_ARTICLE}){{0,2}} (?:{_WHOLE} )*{_SECRET}\b{_NOT_A_SETTING}",
    rf"\b(?:{_REVEAL}|{_SHOW})(?: {_ME})? {_POSS} (?:{_WHOLE} )*(?:(?:initial|original|hidden|secret) )?"
    rf"{_YOUR_PROMPT}\b",
    r"\bwhat (?:is|are|was|were) your (?:(?:initial|original|hidden|secret|system|full|exact) )?(?:prompt"
    r"|instructions|system prompt|directives|programming)\b",
    r"\b(?:repeat|recite|reveal|output|print|write out|echo)(?: back)?(?: all| everything| verbatim)?(?: of)?"
    r" the (?:words|text|prompt) (?:above|before this|that came before|you were given)\b",
)

_DIRECTIVE = _alt(
    rf"\b{_ASIDE} (?:{_AUDIENCE_ARTICLE} )?{_AI}\b{_NOT_AN_AUDIENCE}",
    rf"\b{_ASIDE} (?:{_AUDIENCE_ARTICLE} )?(?:assistants?|models?|bots?) ?:",
    rf"\b(?:to|for|attention|dear|hey|hello|hi|calling|attn) (?:any|all|every|each)(?: of the)?"
    rf" (?:{_AI}\b(?=\s*(?:[:,.!]|$|reading|processing|parsing|summari|that|who|which))"
    rf"|{_WEAK_AI} (?:that (?:is|are) |who (?:is|are) )?{_READING})",
    rf"\b(?:dear|hey|hello|hi|attention|attn|calling|psst) {_AI}\b{_NOT_AN_AUDIENCE}",
    rf"\b{_AI}(?: (?:assistants?|agents?|models?|bots?|tools?|systems?))?(?: that (?:is|are)"
    rf"| who (?:is|are)| currently)? (?:{_READING}|processing) (?:this|these|the following)\b",
    rf"\b(?:the|any|an?) {_WEAK_AI}(?: that (?:is|are)| who (?:is|are))? {_READING}"
    rf" (?:this|these|the following) {_DOC}\b",
    rf"\b(?:if|in case|when) you (?:are|re|r) (?:an? |the |one of the )?(?:{_AI}|bot|automated"
    rf" (?:assistant|agent|system|tool|reader))\b{_NOT_AN_AUDIENCE}",
    rf"\b(?:reading|processing|parsing|summari[sz]ing) this (?:{_DOC} )?as an? (?:{_AI}|bot|model"
    rf"|assistant)\b",
    rf"\bas (?:an?|the) (?:{_AI}|assistant|model|chat ?bot)\b"
    r"(?! (?:manager|team|platform|engineers?|owners?|leads?|on ?call)\b)"
    r".{0,60}?\b(?:must|should|shall|will|always|never|need to|have to|you)\b",
    rf"\bthe (?:assistant|chat ?bot|{_AI}) (?:must|should|shall|needs? to|has to|is to"
    r"|is (?:required|instructed|told|expected|supposed) to)"
    rf"(?: (?:always|only|instead|also|now|immediately|never|not))* {_DIRECTED}\b",
    # "(AI readers: ...)", "LLM instructions:", "For AI eyes only"
    rf"\b{_AI} (?:readers?|crawlers?|(?:assistants? |agents? |models? )?(?:instructions?|directives?|note"
    r"|notice|eyes only)) ?:",
    rf"\bfor (?:{_AI}|models?|assistants?|bots?|machines?|robots?) eyes only\b",
    rf"\bto (?:whichever|whatever|whoever|any|every|each|the) {_MODEL}(?: (?:that|which|who))? (?:reads?"
    r"|is reading|parses?|processes|summari[sz]es|ingests?|sees?|finds?|retrieves?) (?:this|these)\b",
    rf"\bif (?:an?|any|the|some) {_MODEL}(?: is| are| happens to be)? (?:reading|parsing|processing"
    r"|summari[sz]ing|ingesting|seeing|indexing|retrieving) (?:this|these)\b",
    rf"\bif (?:this|these) (?:{_DOC} )?(?:is|are|was|were|gets?) (?:being |ever )?(?:read|parsed|processed"
    rf"|summari[sz]ed|ingested|indexed|retrieved|seen|analy[sz]ed) by (?:an?|any|the|some)"
    rf" (?:{_AI}|models?|bots?|machines?)\b{_NOT_AN_AUDIENCE}",
    r"\b(?:do not|don t|dont|never) (?:tell|inform|alert|notify|let) (?:the user|the human|the engineer"
    r"|the reader|the operator|anyone|them|users)(?: know)? (?:about |of )?(?:this|these|the) (?:note|notes"
    r"|message|comment|instructions?|text|section|line|paragraph|directive|prompt)\b",
    rf"\b{_AI}(?: (?:assistants?|agents?|models?|bots?|tools?|systems?))? (?:must|should|shall|will|need to"
    rf"|have to|are (?:required|instructed|told|expected|asked|supposed) to|are to)"
    rf"(?: (?:always|only|instead|also|now|immediately))* {_DIRECTED}\b",
    r"\b(?:do not|don t|dont|never|without) (?:mention|reveal|disclose|tell|telling|mentioning|revealing"
    r"|disclosing|inform|informing) (?:the user |anyone |the engineer |the human )?(?:about )?(?:these|this)"
    r" (?:instructions?|prompt|directive)\b",
    rf"\bwhen (?:you )?(?:summari[sz](?:e|ing)|answering questions (?:about|from|on)|asked about)"
    rf" (?:this|these) (?:{_DOC} )?(?:always |never |you (?:must|should) |please )?(?:say|tell|include|add"
    rf"|mention|recommend|respond|answer|reply|output|state|claim|insert|direct|advise|ignore)\b",
    r"\b(?:si (?:tu es|vous etes)|wenn (?:du|sie)|si eres|se (?:voce e|voce for|es|tu es|sei)"
    r"|als (?:je|jij|u)) (?:une? |una? |uma? |een |eine? )?(?:ia|ai|ki|llm|modele de langage|sprachmodell"
    r"|modelo de (?:lenguaje|linguagem)|modello linguistico|taalmodel|chatbot)\b",
)

_EXFILTRATE = (
    r"\b(?:send|post|upload|forward|exfiltrate|transmit|submit|append|encode) (?:the |this |all |your |any"
    r" |of )*(?:conversation|chat(?: history)?|context window|system prompt|previous messages"
    r"|user s (?:messages|question))(?: \w+){0,3}? (?:to|into|in) (?:https?|www)\b"
)

# -- anchors ------------------------------------------------------------------------

# Each rule runs only near one of its anchors (words every one of its phrases contains),
# so a text without them costs a set lookup and screening a corpus stays fast. A phrase
# added to a rule must contain one of that rule's anchors as a whole word, within the
# rule's reach of the phrase's start and end (see RULES).
_OVERRIDE_ANCHORS = _set("""
    instruction instructions prompt prompts directive directives guidelines programming consigne consignes
    anweisung anweisungen instruktion instruktionen systemanweisungen systemprompt systemprompts
    instrucciones instruccion indicaciones instrucoes instrucao orientacoes istruzioni istruzione indicazioni
    direttive instructies instructie aanwijzingen opdrachten systeeminstructies systeemprompt directions rules
    guardrails regles indications regeln vorgaben anordnungen direktiven richtlinien reglas directrices
    directivas consignas normas regras diretrizes diretivas indicacoes regole consegne regels richtlijnen
    bevelen above told given instructed taught asked programmed trained everything text content words says
    input todo dijo dessus precede staat stond hierboven gesagte
    said tout dit alles gesagt befohlen aufgetragen mitgeteilt anterior arriba dijeron dicho dije indicaron
    ordenaron tudo disseram dito mandaram tutto detto gezegd verteld opgedragen
""")
_ROLE_ANCHORS = _set("""
    now henceforth maintenant desormais present dorenavant jetzt nun sofort ahora agora doravante ora adesso
    poi avanti nu voortaan longer act behave obey ignore disregard unrestricted uncensored unfiltered
    jailbroken jailbreak evil rogue dan god pretend imagine roleplay play instructions programming directive
    directives persona identity prompt chatgpt claude
    gemini copilot gpt llm ai language model assistant chatbot
""")
_EXTRACT_ANCHORS = _set("""
    systemprompt systemprompts prompt prompts instruction instructions directive directives consigne consignes
    anweisungen systemanweisungen instrucciones indicaciones instrucoes istruzioni systeemprompt
    systeeminstructies instructies programming words text
""")
_DIRECTIVE_ANCHORS = _set("""
    ai ia ki llm llms ais language languages chat chatbot chatbots chatgpt gpt gpt3 gpt4 gpt5 claude gemini
    copilot intelligence intelligenz kunstliche kuenstliche inteligencia intelligenza kunstmatige sprachmodell
    sprachmodelle modele modeles modelo modelos modello modelli taalmodel taalmodellen kiassistent
    kiassistenten kimodell kimodelle assistente asistente assistant assistants agent agents model models bot
    bots reader readers automated instruction instructions prompt directive summarise summarize summarising
    summarizing answering asked eyes note notes message comment
""")
_EXFILTRATE_ANCHORS = _set("conversation chat window prompt messages question")

# fmt: on


def _compile(pattern: str) -> str:
    # A space in a rule is any run of separators; an optional space may be none.
    return pattern.replace(" ?", "\x00").replace(" ", r"[\s,]+").replace("\x00", r"[\s,]*")


RULES: tuple[tuple[str, str, frozenset[str], tuple[int, int]], ...] = (
    ("override instructions", _compile(_OVERRIDE), _OVERRIDE_ANCHORS, (200, 100)),
    (
        "override instructions",
        _compile(_OVERRIDE_COMMON),
        _set("forget nevermind mind message prompt"),
        (60, 80),
    ),
    ("role change", _compile(_ROLE), _ROLE_ANCHORS, (80, 120)),
    (
        "role change",
        _compile(_ROLE_COMMON),
        _set("task job goal mission objective purpose assignment"),
        (40, 20),
    ),
    ("prompt extraction", _compile(_EXTRACT), _EXTRACT_ANCHORS, (140, 80)),
    ("model directive", _compile(_DIRECTIVE), _DIRECTIVE_ANCHORS, (100, 120)),
    ("exfiltration request", _compile(_EXFILTRATE), _EXFILTRATE_ANCHORS, (140, 100)),
)
"""(rule name, pattern over the word view, anchors, how many characters of the word view a
match may reach before and after an anchor), in the order they are tried."""
